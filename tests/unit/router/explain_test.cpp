#include <gtest/gtest.h>

#include "turnpike/router/route_table.h"

namespace turnpike::router {
namespace {

using config::ValueMatch;
using nlohmann::json;

config::Config make_config() {
  config::Config c;
  for (const char* name : {"users", "users-v2"}) {
    config::Cluster cl;
    cl.name = name;
    c.clusters.push_back(cl);
  }
  auto add = [&c](std::string name, config::RouteMatch m) -> config::Route& {
    config::Route r;
    r.name = std::move(name);
    r.match = std::move(m);
    r.backends.push_back({"users", 1});
    c.routes.push_back(std::move(r));
    return c.routes.back();
  };
  {
    config::RouteMatch m;
    m.host = "*.example.org";
    add("org-only", m);
  }
  {
    config::RouteMatch m;
    m.path_prefix = "/users";
    add("users-prefix", m);
  }
  {
    config::RouteMatch m;
    m.path = "/admin/x";
    add("exact", m);
  }
  {
    config::RouteMatch m;
    m.path_regex = "/adm[0-9]+";
    add("regex", m);
  }
  {
    config::RouteMatch m;
    m.methods = {"GET", "POST"};
    add("methods", m);
  }
  {
    config::RouteMatch m;
    m.headers = {{"x-version", {ValueMatch::Kind::Exact, "2"}}};
    add("header-exact", m);
  }
  {
    config::RouteMatch m;
    m.headers = {{"x-tenant", {ValueMatch::Kind::Present, ""}}};
    add("header-present", m);
  }
  {
    config::RouteMatch m;
    m.headers = {{"x-version", {ValueMatch::Kind::Regex, "[3-9]"}}};
    add("header-regex", m);
  }
  {
    config::RouteMatch m;
    m.query = {{"v", {ValueMatch::Kind::Exact, "2"}}};
    add("query-exact", m);
  }
  {
    config::RouteMatch m;
    m.query = {{"debug", {ValueMatch::Kind::Present, ""}}};
    add("query-present", m);
  }
  {
    config::RouteMatch m;
    m.host = "api.example.com";
    m.path_prefix = "/admin";
    auto& r = add("admin", m);
    r.backends = {{"users", 90}, {"users-v2", 10}};
    r.rewrite.path_prefix = "/internal";
    r.rewrite.host = "admin.internal";
  }
  return c;
}

TEST(Explain, ReasonsAndMatch) {
  const auto cfg = make_config();
  const RouteTable t(cfg);
  http::HeaderMap headers;
  headers.add("X-Version", "1");
  const RequestView req{"DELETE", "api.example.com", "/admin/users", "v=1&x=%41", &headers};
  const Explanation e = t.explain(req);
  ASSERT_NE(e.matched, nullptr);
  EXPECT_EQ(e.matched->name(), "admin");
  EXPECT_EQ(e.matched, t.match(req));

  const std::vector<std::pair<std::string, std::string>> expected = {
      {"org-only", R"(host: "api.example.com" does not match "*.example.org")"},
      {"users-prefix", R"(path: "/admin/users" is not under prefix "/users")"},
      {"exact", R"(path: "/admin/users" does not equal "/admin/x")"},
      {"regex", R"(path: "/admin/users" does not match regex "/adm[0-9]+")"},
      {"methods", "method: DELETE not in [GET, POST]"},
      {"header-exact", R"(header x-version: "1" does not equal "2")"},
      {"header-present", "header x-tenant: missing"},
      {"header-regex", R"(header x-version: "1" does not match regex "[3-9]")"},
      {"query-exact", R"(query v: "1" does not equal "2")"},
      {"query-present", "query debug: missing"},
  };
  ASSERT_EQ(e.misses.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(e.misses[i].route, expected[i].first);
    EXPECT_EQ(e.misses[i].reason, expected[i].second) << expected[i].first;
    EXPECT_EQ(e.misses[i].index, i);
  }

  const json j = e.to_json(req);
  EXPECT_EQ(j["request"], json::parse(R"({"method": "DELETE", "host": "api.example.com",
                                          "path": "/admin/users", "query": "v=1&x=%41"})"));
  EXPECT_EQ(j["matched"]["route"], "admin");
  EXPECT_EQ(j["matched"]["index"], 10);
  EXPECT_EQ(j["matched"]["action"], "proxy");
  EXPECT_EQ(j["matched"]["clusters"], json::parse(R"([{"cluster": "users", "weight": 90},
                                                      {"cluster": "users-v2", "weight": 10}])"));
  EXPECT_EQ(j["matched"]["rewrite"],
            json::parse(R"({"path": "/internal/users", "host": "admin.internal"})"));
  ASSERT_EQ(j["not_matched"].size(), expected.size());
  EXPECT_EQ(j["not_matched"][0], json::parse(R"({"route": "org-only", "index": 0,
                            "reason": "host: \"api.example.com\" does not match \"*.example.org\""})"));
  EXPECT_EQ(j["not_matched"][4]["reason"], "method: DELETE not in [GET, POST]");
}

TEST(Explain, FirstFailingConditionInOrder) {
  // A route failing host, path and method reports only the host.
  config::Config c;
  config::Cluster cl;
  cl.name = "users";
  c.clusters.push_back(cl);
  config::Route r;
  r.name = "users-api";
  r.match.host = "api.example.com";
  r.match.path_prefix = "/users";
  r.match.methods = {"GET"};
  r.match.headers = {{"x-version", {ValueMatch::Kind::Exact, "2"}}};
  r.backends = {{"users", 1}};
  c.routes.push_back(r);
  const RouteTable t(c);

  http::HeaderMap h;
  auto reason = [&](std::string_view method, std::string_view host, std::string_view path) {
    const auto e = t.explain({method, host, path, "", &h});
    return e.misses.empty() ? std::string("matched") : e.misses[0].reason;
  };
  EXPECT_EQ(reason("POST", "www.example.com", "/x"),
            R"(host: "www.example.com" does not match "api.example.com")");
  EXPECT_EQ(reason("POST", "api.example.com", "/x"), R"(path: "/x" is not under prefix "/users")");
  EXPECT_EQ(reason("POST", "api.example.com", "/users"), "method: POST not in [GET]");
  EXPECT_EQ(reason("GET", "api.example.com", "/users"), "header x-version: missing");
  h.add("x-version", "2");
  EXPECT_EQ(reason("GET", "api.example.com", "/users"), "matched");
}

TEST(Explain, NoMatchListsEveryRoute) {
  config::Config c;
  config::Route redirect;
  redirect.name = "moved";
  redirect.match.path_prefix = "/old";
  redirect.redirect = config::Redirect{301, "https://example.com/new"};
  config::Route respond;
  respond.name = "health";
  respond.match.path = "/healthz";
  respond.respond = config::DirectResponse{200, "ok", "text/plain", {}};
  c.routes = {redirect, respond};
  const RouteTable t(c);

  const RequestView miss{"GET", "h", "/nope", "", nullptr};
  const auto e = t.explain(miss);
  EXPECT_EQ(e.matched, nullptr);
  ASSERT_EQ(e.misses.size(), 2u);
  const json j = e.to_json(miss);
  EXPECT_TRUE(j["matched"].is_null());
  EXPECT_EQ(j["not_matched"][1]["route"], "health");
  EXPECT_EQ(j["not_matched"][1]["index"], 1);

  const RequestView hit{"GET", "h", "/old/page", "", nullptr};
  const json jr = t.explain(hit).to_json(hit);
  EXPECT_EQ(jr["matched"]["action"], "redirect");
  EXPECT_EQ(jr["matched"]["clusters"], json::array());
  EXPECT_EQ(jr["matched"]["rewrite"]["path"], "/old/page");
  EXPECT_TRUE(jr["matched"]["rewrite"]["host"].is_null());
  EXPECT_EQ(jr["not_matched"], json::array());

  const RequestView health{"GET", "h", "/healthz", "", nullptr};
  EXPECT_EQ(t.explain(health).to_json(health)["matched"]["action"], "respond");
}

}  // namespace
}  // namespace turnpike::router
