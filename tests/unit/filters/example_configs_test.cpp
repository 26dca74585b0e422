// The shipped example configs (config/*.yaml) load cleanly with every built-in filter type
// registered, as the daemon loads them. Here rather than with the config tests: they name
// filter types, which live in tp_filters.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "turnpike/config/config.h"
#include "turnpike/filters/registry.h"
#include "unit/config/load_helpers.h"

namespace turnpike::config {
namespace {

using testing::error_lines;
using testing::joined;
using testing::warning_lines;

class ExampleConfigEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { filters::register_builtin_filter_types(); }
};
const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new ExampleConfigEnvironment);

// The shipped examples must stay valid and warning-free.
class ExampleConfig : public ::testing::TestWithParam<const char*> {};

TEST_P(ExampleConfig, LoadsCleanly) {
  const auto r = load_file(std::string(TP_TEST_SOURCE_DIR) + "/../config/" + GetParam());
  EXPECT_TRUE(r.errors.empty()) << joined(error_lines(r));
  EXPECT_TRUE(r.warnings.empty()) << joined(warning_lines(r));
  EXPECT_TRUE(r.config.has_value());
}

INSTANTIATE_TEST_SUITE_P(Examples, ExampleConfig, ::testing::Values("demo.yaml", "turnpike.yaml"),
                         [](const auto& p) {
                           return std::string(p.param).substr(0, std::string(p.param).find('.'));
                         });

TEST(DemoConfig, HasTheDocumentedShape) {
  const auto r = load_file(std::string(TP_TEST_SOURCE_DIR) + "/../config/demo.yaml");
  ASSERT_TRUE(r.config.has_value());
  const Config& c = *r.config;
  EXPECT_EQ(c.admin.listen, "127.0.0.1:9901");
  ASSERT_EQ(c.listeners.size(), 1U);
  EXPECT_EQ(c.listeners[0].name, "public");
  EXPECT_EQ(c.listeners[0].listen, "0.0.0.0:8080");
  ASSERT_NE(c.find_cluster("users"), nullptr);
  EXPECT_EQ(c.find_cluster("users")->endpoints.size(), 2U);
  ASSERT_NE(c.find_cluster("orders"), nullptr);
  EXPECT_EQ(c.access_log.path, "stdout");
  // The /account route shows the filter chain: api_key, authz, rate_limit, headers.
  ASSERT_NE(c.find_consumer("acme"), nullptr);
  for (const char* f : {"key", "gold-only", "per-consumer", "tag"})
    EXPECT_NE(c.find_filter(f), nullptr) << f;
  const auto account = std::find_if(c.routes.begin(), c.routes.end(),
                                    [](const Route& route) { return route.name == "account"; });
  ASSERT_NE(account, c.routes.end());
  EXPECT_EQ(account->filters.size(), 4U);
}

}  // namespace
}  // namespace turnpike::config
