#include "turnpike/router/route_table.h"

#include <gtest/gtest.h>

#include <map>
#include <stdexcept>

#include "turnpike/http/path.h"

namespace turnpike::router {
namespace {

using config::ValueMatch;

config::Route route(std::string name, config::RouteMatch match, std::string cluster = "c") {
  config::Route r;
  r.name = std::move(name);
  r.match = std::move(match);
  r.backends.push_back({std::move(cluster), 1});
  return r;
}

config::Config make_config(std::vector<config::Route> routes) {
  config::Config c;
  for (const char* name : {"c", "users", "users-v2", "other"}) {
    config::Cluster cl;
    cl.name = name;
    c.clusters.push_back(cl);
  }
  c.routes = std::move(routes);
  return c;
}

ValueMatch exact(std::string v) {
  return {ValueMatch::Kind::Exact, std::move(v)};
}
ValueMatch regex(std::string v) {
  return {ValueMatch::Kind::Regex, std::move(v)};
}
ValueMatch present() {
  return {ValueMatch::Kind::Present, {}};
}

struct Req {
  std::string method = "GET";
  std::string host = "api.example.com";
  std::string path = "/";
  std::string query;
  http::HeaderMap headers;
  RequestView view() const { return {method, host, path, query, &headers}; }
};

// Name of the route that matches, or "" when none does.
std::string matched(const RouteTable& t, const Req& r) {
  const Route* m = t.match(r.view());
  return m ? m->name() : "";
}

struct HostCase {
  std::string pattern;
  std::string host;
  bool matches;
};

class HostMatch : public ::testing::TestWithParam<HostCase> {};

TEST_P(HostMatch, Matches) {
  const auto& c = GetParam();
  config::RouteMatch m;
  m.host = c.pattern;
  const auto cfg = make_config({route("r", m)});
  const RouteTable t(cfg);
  Req r;
  r.host = c.host;
  EXPECT_EQ(matched(t, r) == "r", c.matches) << c.pattern << " vs " << c.host;
}

INSTANTIATE_TEST_SUITE_P(Hosts, HostMatch,
                         ::testing::Values(HostCase{"api.example.com", "api.example.com", true},
                                           HostCase{"API.Example.com", "api.example.com", true},
                                           HostCase{"api.example.com", "api.example.com.evil",
                                                    false},
                                           HostCase{"api.example.com", "xapi.example.com", false},
                                           HostCase{"api.example.com", "", false},
                                           HostCase{"*.example.com", "api.example.com", true},
                                           HostCase{"*.example.com", "a.b.example.com", true},
                                           HostCase{"*.example.com", "example.com", false},
                                           HostCase{"*.example.com", ".example.com", false},
                                           HostCase{"*.example.com", "badexample.com", false},
                                           HostCase{"*.example.com", "api.example.org", false},
                                           HostCase{"*.example.com", "example.com.evil", false},
                                           HostCase{"*", "anything.at.all", true}));

struct PathCase {
  std::string kind;  // path | prefix | regex
  std::string pattern;
  std::string target;  // raw, normalized before matching
  bool matches;
};

class PathMatch : public ::testing::TestWithParam<PathCase> {};

TEST_P(PathMatch, Matches) {
  const auto& c = GetParam();
  config::RouteMatch m;
  if (c.kind == "path") m.path = c.pattern;
  if (c.kind == "prefix") m.path_prefix = c.pattern;
  if (c.kind == "regex") m.path_regex = c.pattern;
  const auto cfg = make_config({route("r", m)});
  const RouteTable t(cfg);
  const auto split = http::normalize_target(c.target);
  ASSERT_TRUE(split) << c.target;
  Req r;
  r.path = split->path;
  EXPECT_EQ(matched(t, r) == "r", c.matches) << c.kind << " " << c.pattern << " vs " << c.target;
}

INSTANTIATE_TEST_SUITE_P(
    Paths, PathMatch,
    ::testing::Values(
        PathCase{"path", "/healthz", "/healthz", true},
        PathCase{"path", "/healthz", "/healthz/", false},
        PathCase{"path", "/healthz", "/Healthz", false},
        PathCase{"path", "/healthz", "/x/../healthz", true},
        PathCase{"path", "/healthz", "/%68ealthz", true}, PathCase{"prefix", "/api", "/api", true},
        PathCase{"prefix", "/api", "/api/", true}, PathCase{"prefix", "/api", "/api/x/y", true},
        PathCase{"prefix", "/api", "/apix", false}, PathCase{"prefix", "/api", "/ap", false},
        PathCase{"prefix", "/api", "/v1/api", false}, PathCase{"prefix", "/api/", "/api/x", true},
        PathCase{"prefix", "/api/", "/api/", true}, PathCase{"prefix", "/api/", "/api", false},
        PathCase{"prefix", "/", "/anything", true},
        // Normalization attacks cannot reach /admin through, or escape, another prefix.
        PathCase{"prefix", "/admin", "/api/../admin", true},
        PathCase{"prefix", "/admin", "/api/%2e%2e/admin", true},
        PathCase{"prefix", "/admin", "/api/.%2E/admin", true},
        PathCase{"prefix", "/admin", "//admin", true},
        PathCase{"prefix", "/admin", "/./admin", true},
        PathCase{"prefix", "/admin", "/admin/.", true},
        PathCase{"prefix", "/admin", "/%61dmin", true},
        PathCase{"prefix", "/api", "/api/../admin", false},
        PathCase{"prefix", "/api", "/api/%2e%2e/admin", false},
        PathCase{"prefix", "/admin", "/api%2F..%2Fadmin", false},
        PathCase{"regex", "/users/[0-9]+", "/users/42", true},
        PathCase{"regex", "/users/[0-9]+", "/users/42/x", false},  // full match, not partial
        PathCase{"regex", "/users/[0-9]+", "/x/users/42", false},
        PathCase{"regex", "/users/[0-9]+", "/users/./42", true},
        // The literal range pre-filter must never reject a real match.
        PathCase{"regex", "/users/[0-9]+", "/users/" + std::string(200, '9'), true},
        PathCase{"regex", "/users/[0-9]+", "/users/" + std::string(200, '9') + "x", false},
        PathCase{"regex", ".*/admin", "/x/y/admin", true},
        PathCase{"regex", "(?i)/ADMIN/.*", "/admin/x", true},
        PathCase{"regex", "/a|/zz", "/zz", true}, PathCase{"regex", "/a|/zz", "/b", false},
        PathCase{"regex", "/caf%C3%A9", "/caf\xC3\xA9", true}));

TEST(RouteTable, MethodsAnyOfList) {
  config::RouteMatch m;
  m.methods = {"GET", "POST"};
  const auto cfg = make_config({route("r", m)});
  const RouteTable t(cfg);
  Req r;
  for (const char* method : {"GET", "POST"}) {
    r.method = method;
    EXPECT_EQ(matched(t, r), "r") << method;
  }
  for (const char* method : {"DELETE", "get", "HEAD", ""}) {
    r.method = method;
    EXPECT_EQ(matched(t, r), "") << method;
  }
}

TEST(RouteTable, HeadersExactRegexPresent) {
  config::RouteMatch m;
  m.headers = {{"x-version", exact("2")},
               {"X-Tenant", regex("[a-z]+-[0-9]+")},
               {"authorization", present()}};
  const auto cfg = make_config({route("r", m)});
  const RouteTable t(cfg);
  Req r;
  r.headers.add("X-Version", "2");
  r.headers.add("x-tenant", "acme-42");
  r.headers.add("Authorization", "");
  EXPECT_EQ(matched(t, r), "r");

  Req wrong_value = r;
  wrong_value.headers.set("x-version", "20");
  EXPECT_EQ(matched(t, wrong_value), "");

  Req partial_regex = r;
  partial_regex.headers.set("x-tenant", "acme-42x");
  EXPECT_EQ(matched(t, partial_regex), "");

  Req missing = r;
  missing.headers.remove("authorization");
  EXPECT_EQ(matched(t, missing), "");

  Req repeated = r;  // any of the repeated values may match
  repeated.headers.set("x-version", "1");
  repeated.headers.add("x-version", "2");
  EXPECT_EQ(matched(t, repeated), "r");

  Req none = r;
  EXPECT_EQ(t.match({none.method, none.host, none.path, none.query, nullptr}), nullptr);
}

TEST(RouteTable, QueryExactRegexPresent) {
  config::RouteMatch m;
  m.query = {{"v", exact("2")}, {"id", regex("[0-9]+")}, {"debug", present()}};
  const auto cfg = make_config({route("r", m)});
  const RouteTable t(cfg);
  struct Case {
    std::string query;
    bool matches;
  };
  for (const auto& c : std::vector<Case>{
           {"v=2&id=17&debug", true},
           {"debug=0&id=17&v=2", true},
           {"v=%32&id=%31%37&debug=", true},  // values are percent-decoded
           {"v=2&id=17", false},
           {"v=3&id=17&debug", false},
           {"v=2&v=3&id=17&debug", true},  // first occurrence
           {"v=3&v=2&id=17&debug", false},
           {"v=2&id=17a&debug", false},
           {"vv=2&id=17&debug", false},
           {"", false},
       }) {
    Req r;
    r.query = c.query;
    EXPECT_EQ(matched(t, r) == "r", c.matches) << c.query;
  }
}

TEST(RouteTable, QueryRegexOnLongEncodedValue) {
  config::RouteMatch m;
  m.query = {{"q", regex("a+ b")}};
  const auto cfg = make_config({route("r", m)});
  const RouteTable t(cfg);
  Req r;
  r.query = "q=" + std::string(3000, 'a') + "+b";
  EXPECT_EQ(matched(t, r), "r");
  r.query = "q=" + std::string(3000, 'a') + "%20b";
  EXPECT_EQ(matched(t, r), "r");
  r.query = "q=" + std::string(3000, 'a') + "%20c";
  EXPECT_EQ(matched(t, r), "");
}

TEST(RouteTable, FirstMatchWinsInDeclaredOrder) {
  config::RouteMatch users;
  users.path_prefix = "/users";
  config::RouteMatch users_v2 = users;
  users_v2.headers = {{"x-version", exact("2")}};
  config::RouteMatch all;
  all.path_prefix = "/";
  const auto cfg =
      make_config({route("users", users), route("users-v2", users_v2), route("all", all)});
  const RouteTable t(cfg);
  Req r;
  r.path = "/users/7";
  r.headers.add("x-version", "2");
  EXPECT_EQ(matched(t, r), "users");  // users-v2 is shadowed by the earlier, broader route
  r.path = "/other";
  EXPECT_EQ(matched(t, r), "all");
  ASSERT_EQ(t.routes().size(), 3u);
  EXPECT_EQ(t.routes()[2].index, 2u);
}

TEST(RouteTable, NoRoutes) {
  const auto cfg = make_config({});
  const RouteTable t(cfg);
  EXPECT_EQ(t.match(Req{}.view()), nullptr);
}

TEST(RouteTable, ActionsAndClusterResolution) {
  auto proxy = route("proxy", {}, "users");
  proxy.backends = {{"users", 90}, {"users-v2", 10}};
  auto redirect = route("redirect", {});
  redirect.backends.clear();
  redirect.redirect = config::Redirect{301, "https://example.com/new"};
  auto respond = route("respond", {});
  respond.backends.clear();
  respond.respond = config::DirectResponse{};
  const auto cfg = make_config({proxy, redirect, respond});
  const RouteTable t(cfg);
  const auto& rs = t.routes();
  EXPECT_EQ(rs[0].action, ActionKind::Proxy);
  ASSERT_EQ(rs[0].backends.size(), 2u);
  EXPECT_EQ(rs[0].backends[0].cluster_index, 1u);
  EXPECT_EQ(rs[0].backends[0].cumulative_weight, 90u);
  EXPECT_EQ(rs[0].backends[1].cluster_index, 2u);
  EXPECT_EQ(rs[0].backends[1].cumulative_weight, 100u);
  EXPECT_EQ(rs[0].total_weight, 100u);
  EXPECT_EQ(rs[1].action, ActionKind::Redirect);
  EXPECT_TRUE(rs[1].backends.empty());
  EXPECT_EQ(rs[2].action, ActionKind::Respond);
}

TEST(RouteTable, PickClusterFollowsWeights) {
  auto proxy = route("proxy", {});
  proxy.backends = {{"users", 3}, {"other", 0}, {"users-v2", 1}};
  const auto cfg = make_config({proxy});
  const RouteTable t(cfg);
  const Route& r = t.routes()[0];
  ASSERT_EQ(r.total_weight, 4u);
  EXPECT_EQ(r.pick_cluster(0), 1u);
  EXPECT_EQ(r.pick_cluster(2), 1u);
  EXPECT_EQ(r.pick_cluster(3), 2u);
  std::map<std::uint32_t, int> counts;
  for (std::uint32_t i = 0; i < 4000; ++i)
    ++counts[r.pick_cluster(i % r.total_weight)];
  EXPECT_EQ(counts[1], 3000);
  EXPECT_EQ(counts[2], 1000);
  EXPECT_EQ(counts.count(3), 0u);        // weight 0 is never picked
  EXPECT_EQ(r.pick_cluster(4 + 3), 2u);  // out-of-range input wraps instead of overflowing
}

TEST(RouteTable, InvalidConfigThrows) {
  config::RouteMatch bad_re;
  bad_re.path_regex = "/(unclosed";
  EXPECT_THROW(RouteTable(make_config({route("r", bad_re)})), std::invalid_argument);
  config::RouteMatch bad_header;
  bad_header.headers = {{"x", regex("[")}};
  EXPECT_THROW(RouteTable(make_config({route("r", bad_header)})), std::invalid_argument);
  EXPECT_THROW(RouteTable(make_config({route("r", {}, "nope")})), std::invalid_argument);
}

TEST(RouteTable, Movable) {
  config::RouteMatch m;
  m.path = "/x";
  const auto cfg = make_config({route("r", m)});
  RouteTable a(cfg);
  RouteTable b(std::move(a));
  Req r;
  r.path = "/x";
  EXPECT_EQ(matched(b, r), "r");
}

struct RewriteCase {
  std::string kind;  // prefix | path | regex | none
  std::string pattern;
  std::string rewrite;
  std::string path;
  std::string expected;
};

class Rewritten : public ::testing::TestWithParam<RewriteCase> {};

TEST_P(Rewritten, Path) {
  const auto& c = GetParam();
  config::RouteMatch m;
  if (c.kind == "prefix") m.path_prefix = c.pattern;
  if (c.kind == "path") m.path = c.pattern;
  if (c.kind == "regex") m.path_regex = c.pattern;
  auto r = route("r", m);
  if (!c.rewrite.empty()) r.rewrite.path_prefix = c.rewrite;
  const auto cfg = make_config({r});
  const RouteTable t(cfg);
  EXPECT_EQ(t.routes()[0].rewritten_path(c.path), c.expected) << c.pattern << " -> " << c.rewrite;
}

INSTANTIATE_TEST_SUITE_P(
    Rewrites, Rewritten,
    ::testing::Values(RewriteCase{"prefix", "/users", "/v1/users", "/users/7", "/v1/users/7"},
                      RewriteCase{"prefix", "/users", "/v1/users", "/users", "/v1/users"},
                      RewriteCase{"prefix", "/users", "/v1/users", "/users/", "/v1/users/"},
                      RewriteCase{"prefix", "/api", "/", "/api/x", "/x"},
                      RewriteCase{"prefix", "/api", "/", "/api", "/"},
                      RewriteCase{"prefix", "/api/", "/v1", "/api/x", "/v1/x"},
                      RewriteCase{"prefix", "/api/", "/v1/", "/api/x", "/v1/x"},
                      RewriteCase{"prefix", "/", "/v1", "/x/y", "/v1/x/y"},
                      RewriteCase{"path", "/old", "/new/place", "/old", "/new/place"},
                      RewriteCase{"prefix", "/users", "", "/users/7", "/users/7"},
                      RewriteCase{"none", "", "", "/a/b", "/a/b"},
                      RewriteCase{"regex", "/u/.*", "/v1", "/u/1", "/u/1"}));

}  // namespace
}  // namespace turnpike::router
