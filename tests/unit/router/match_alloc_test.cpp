// match() is on the per-request path and promises not to allocate: count global allocations
// around it. The replacement operator new applies to this whole test binary, which is harmless.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "turnpike/router/route_table.h"

namespace {
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}

namespace turnpike::router {
namespace {

using config::ValueMatch;

TEST(MatchAllocations, NoneOnTheRequestPath) {
  config::Config c;
  config::Cluster cl;
  cl.name = "c";
  c.clusters.push_back(cl);
  auto add = [&c](config::RouteMatch m) {
    config::Route r;
    r.name = "r" + std::to_string(c.routes.size());
    r.match = std::move(m);
    r.backends = {{"c", 1}};
    c.routes.push_back(std::move(r));
  };
  config::RouteMatch m;
  m.host = "*.example.org";
  add(m);
  m = {};
  m.path_regex = "/users/[0-9]+/orders";
  add(m);
  m = {};
  m.query = {{"q", {ValueMatch::Kind::Regex, "[a-z ]+"}}, {"v", {ValueMatch::Kind::Exact, "2 3"}}};
  add(m);
  m = {};
  m.headers = {{"x-tenant", {ValueMatch::Kind::Regex, "t-[0-9]+"}},
               {"x-version", {ValueMatch::Kind::Exact, "9"}}};
  add(m);
  m = {};
  m.host = "api.example.com";
  m.path_prefix = "/api";
  m.methods = {"GET", "POST"};
  add(m);
  const RouteTable t(c);

  http::HeaderMap h;
  h.add("X-Tenant", "t-42");
  h.add("X-Version", "2");
  const RequestView req{"POST", "api.example.com", "/api/users/7", "q=ab%20c&v=2+3x", &h};
  const Route* warm = t.match(req);  // let RE2 build its lazy DFA state first
  ASSERT_NE(warm, nullptr);
  EXPECT_EQ(warm->name(), "r4");

  const long before = g_allocations.load();
  const Route* hit = nullptr;
  for (int i = 0; i < 100; ++i)
    hit = t.match(req);
  EXPECT_EQ(g_allocations.load() - before, 0);
  EXPECT_EQ(hit, warm);

  // The counter does see allocations: explain() builds strings.
  const long before_explain = g_allocations.load();
  EXPECT_EQ(t.explain(req).matched, warm);
  EXPECT_GT(g_allocations.load() - before_explain, 0);
}

}  // namespace
}  // namespace turnpike::router
