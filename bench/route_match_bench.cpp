// Per-request routing cost: normalize the request-target, then match it against a ~50-route
// table shaped like a real edge config (hosts, prefixes, a few regexes and header matches).
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "turnpike/http/path.h"
#include "turnpike/router/route_table.h"

namespace {

using turnpike::config::ValueMatch;
namespace config = turnpike::config;
namespace http = turnpike::http;
namespace router = turnpike::router;

config::Config make_config() {
  config::Config c;
  config::Cluster cl;
  cl.name = "backend";
  c.clusters.push_back(cl);
  auto add = [&c](config::RouteMatch m) {
    config::Route r;
    r.name = "route-" + std::to_string(c.routes.size());
    r.match = std::move(m);
    r.backends = {{"backend", 1}};
    c.routes.push_back(std::move(r));
  };
  const char* services[] = {"users",   "orders", "billing",  "search",   "catalog",
                            "reviews", "carts",  "payments", "shipping", "auth"};
  for (int v = 0; v < 4; ++v) {
    for (const char* s : services) {
      config::RouteMatch m;
      m.host = v % 2 ? "*.example.com" : "api.example.com";
      m.path_prefix = "/v" + std::to_string(v + 1) + "/" + s;
      if (v == 1) m.methods = {"GET", "POST", "PUT"};
      if (v == 2) m.headers = {{"x-version", {ValueMatch::Kind::Exact, "2"}}};
      add(m);
    }
  }
  for (int i = 0; i < 5; ++i) {
    config::RouteMatch m;
    m.path_regex = "/items/[0-9]+/part" + std::to_string(i);
    add(m);
  }
  for (int i = 0; i < 4; ++i) {
    config::RouteMatch m;
    m.path = "/static/file" + std::to_string(i) + ".css";
    add(m);
  }
  config::RouteMatch fallback;
  fallback.path_prefix = "/";
  add(fallback);
  return c;
}

void run(benchmark::State& state, std::string_view target, std::string_view host) {
  static const config::Config cfg = make_config();
  static const router::RouteTable table(cfg);
  http::HeaderMap headers;
  headers.add("Accept", "*/*");
  headers.add("User-Agent", "bench/1.0");
  headers.add("X-Version", "2");
  for (auto _ : state) {
    auto split = http::normalize_target(target);
    const router::RequestView req{"GET", host, split->path, split->query, &headers};
    const router::Route* r = table.match(req);
    benchmark::DoNotOptimize(r);
  }
}

void BM_FirstRoute(benchmark::State& s) {
  run(s, "/v1/users/7", "api.example.com");
}
void BM_MidTableHeader(benchmark::State& s) {
  run(s, "/v3/auth/token?x=1", "api.example.com");
}
void BM_LastPrefixRoute(benchmark::State& s) {
  run(s, "/v4/auth/login?next=%2Fhome", "www.example.com");
}
void BM_Regex(benchmark::State& s) {
  run(s, "/items/123/part4", "api.example.com");
}
void BM_Fallback(benchmark::State& s) {
  run(s, "/api/../x/%2e%2E/y//z?q=1", "unknown.example.net");
}
void BM_NormalizeOnly(benchmark::State& s) {
  for (auto _ : s)
    benchmark::DoNotOptimize(http::normalize_target("/v4/auth/login?next=1"));
}

BENCHMARK(BM_NormalizeOnly);
BENCHMARK(BM_FirstRoute);
BENCHMARK(BM_MidTableHeader);
BENCHMARK(BM_LastPrefixRoute);
BENCHMARK(BM_Regex);
BENCHMARK(BM_Fallback);

}  // namespace

BENCHMARK_MAIN();
