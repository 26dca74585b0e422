// A route that an earlier route fully covers is a warning (never an error), and only when
// certain.
#include <gtest/gtest.h>

#include <cctype>

#include "turnpike/config/config.h"
#include "unit/config/load_helpers.h"

namespace turnpike::config {
namespace {

using testing::kPreamble;
using testing::warning_lines;

LoadResult load_routes(const std::string& routes) {
  return load_string(std::string(kPreamble) + "routes:\n" + routes, "t.yaml");
}

TEST(Shadow, CatchAllShadowsLaterRoutes) {
  const auto r = load_routes(R"(  - name: health
    match: {path: /healthz}
    respond: {status: 200}
  - name: catch-all
    match: {path_prefix: /}
    backend: users
  - name: orders
    match: {path_prefix: /orders, methods: [GET]}
    backend: orders
  - name: x
    match: {host: api.example.com, path: /x, headers: {x-a: "1"}, query: {q: {present: true}}}
    backend: orders
)");
  EXPECT_TRUE(r.errors.empty());
  ASSERT_TRUE(r.config.has_value()) << "warnings must not block the config";
  EXPECT_EQ(warning_lines(r),
            (std::vector<std::string>{
                "t.yaml:16:5: warning: routes[2]: route 'orders' can never match: route "
                "'catch-all' (routes[1]) matches all its requests",
                "t.yaml:19:5: warning: routes[3]: route 'x' can never match: route 'catch-all' "
                "(routes[1]) matches all its requests"}));
}

TEST(Shadow, RouteWithoutMatchShadowsEverythingAfterIt) {
  const auto r = load_routes(R"(  - backend: users
  - match: {path: /a}
    backend: orders
)");
  EXPECT_EQ(warning_lines(r), (std::vector<std::string>{
                                  "t.yaml:11:5: warning: routes[1]: route 'route-1' can never "
                                  "match: route 'route-0' (routes[0]) matches all its requests"}));
}

struct ShadowCase {
  const char* name;
  const char* earlier;  // match of routes[0]
  const char* later;    // match of routes[1]
  bool shadowed;
};

class ShadowCases : public ::testing::TestWithParam<ShadowCase> {};

TEST_P(ShadowCases, WarnsOnlyWhenCertain) {
  const auto& c = GetParam();
  const auto r =
      load_routes(std::string("  - match: ") + c.earlier +
                  "\n    backend: users\n  - match: " + c.later + "\n    backend: orders\n");
  ASSERT_TRUE(r.errors.empty()) << testing::joined(testing::error_lines(r));
  EXPECT_EQ(r.warnings.size(), c.shadowed ? 1U : 0U) << c.name << "\n"
                                                     << testing::joined(warning_lines(r));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ShadowCases,
    ::testing::Values(
        // Shadowed.
        ShadowCase{"same exact path", "{path: /a}", "{path: /a}", true},
        ShadowCase{"prefix covers path", "{path_prefix: /api}", "{path: /api/users}", true},
        ShadowCase{"prefix covers itself", "{path_prefix: /api}", "{path: /api}", true},
        ShadowCase{"prefix covers prefix", "{path_prefix: /api}", "{path_prefix: /api/v1}", true},
        ShadowCase{"slash prefix covers regex", "{path_prefix: /}", "{path_regex: '/x.*'}", true},
        ShadowCase{"regex covers exact path", "{path_regex: '/items/[0-9]+'}", "{path: /items/42}",
                   true},
        ShadowCase{"same regex", "{path_regex: '/a.*'}", "{path_regex: '/a.*'}", true},
        ShadowCase{"wildcard covers host", "{host: '*.example.com'}",
                   "{host: api.example.com, path: /a}", true},
        ShadowCase{"wildcard covers deeper wildcard", "{host: '*.example.com'}",
                   "{host: '*.eu.example.com'}", true},
        ShadowCase{"same host, case folded", "{host: API.example.com}", "{host: api.EXAMPLE.com}",
                   true},
        ShadowCase{"methods superset", "{methods: [GET, POST]}", "{methods: [get]}", true},
        ShadowCase{"header present covers exact", "{headers: {x-a: {present: true}}}",
                   "{headers: {X-A: '1', x-b: '2'}}", true},
        ShadowCase{"header regex covers exact", "{headers: {x-a: {regex: '[0-9]+'}}}",
                   "{headers: {x-a: '12'}}", true},
        ShadowCase{"same query", "{query: {v: '2'}}", "{query: {v: '2'}, path: /a}", true},
        // Not shadowed.
        ShadowCase{"segment boundary", "{path_prefix: /api}", "{path: /apix}", false},
        ShadowCase{"segment boundary prefix", "{path_prefix: /api}", "{path_prefix: /apix}", false},
        ShadowCase{"exact path vs prefix", "{path: /a}", "{path_prefix: /a}", false},
        ShadowCase{"prefix vs regex", "{path_prefix: /a}", "{path_regex: '/a/.*'}", false},
        ShadowCase{"regex misses exact path", "{path_regex: '/items/[0-9]+'}", "{path: /items/x}",
                   false},
        ShadowCase{"different regex", "{path_regex: '/a.*'}", "{path_regex: '/a/.*'}", false},
        ShadowCase{"earlier has host", "{host: a.example.com}", "{path: /a}", false},
        ShadowCase{"wildcard is not the apex", "{host: '*.example.com'}", "{host: example.com}",
                   false},
        ShadowCase{"exact host vs wildcard", "{host: a.example.com}", "{host: '*.example.com'}",
                   false},
        ShadowCase{"earlier has methods", "{methods: [GET]}", "{path: /a}", false},
        ShadowCase{"methods not a subset", "{methods: [GET]}", "{methods: [GET, POST]}", false},
        ShadowCase{"earlier has header", "{headers: {x-a: '1'}}", "{path: /a}", false},
        ShadowCase{"different header value", "{headers: {x-a: '1'}}", "{headers: {x-a: '2'}}",
                   false},
        ShadowCase{"exact does not cover present", "{headers: {x-a: '1'}}",
                   "{headers: {x-a: {present: true}}}", false},
        ShadowCase{"header regex misses", "{headers: {x-a: {regex: '[0-9]+'}}}",
                   "{headers: {x-a: 'abc'}}", false},
        ShadowCase{"query vs header", "{query: {x-a: '1'}}", "{headers: {x-a: '1'}}", false},
        ShadowCase{"later broader", "{path: /a/b}", "{path_prefix: /a}", false}),
    [](const ::testing::TestParamInfo<ShadowCase>& param) {
      std::string n = param.param.name;
      for (char& ch : n) {
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      }
      return n;
    });

TEST(Shadow, NotReportedWhenConfigHasErrors) {
  // routes[0]'s broken path must not make it look like a catch-all.
  const auto r = load_routes(R"(  - match: {path_prefix: api}
    backend: users
  - match: {path: /b}
    backend: orders
)");
  EXPECT_EQ(r.errors.size(), 1U);
  EXPECT_TRUE(r.warnings.empty());
}

}  // namespace
}  // namespace turnpike::config
