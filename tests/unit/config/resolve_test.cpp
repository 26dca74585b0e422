// Endpoint host names are resolved when the config loads (on the control thread).
#include <gtest/gtest.h>

#include "turnpike/config/config.h"
#include "unit/config/load_helpers.h"

namespace turnpike::config {
namespace {

TEST(Resolve, LocalhostResolvesToLoopback) {
  const Config c = testing::expect_valid(R"(listeners: [{listen: "127.0.0.1:0"}]
clusters:
  - name: local
    endpoints: ["localhost:9001", {address: "localhost:9002", weight: 2}]
)");
  ASSERT_EQ(c.clusters.size(), 1U);
  ASSERT_EQ(c.clusters[0].endpoints.size(), 2U);
  const auto& ep = c.clusters[0].endpoints[0];
  EXPECT_EQ(ep.written, "localhost:9001");
  EXPECT_TRUE(ep.address == "127.0.0.1" || ep.address == "::1") << ep.address;
  EXPECT_EQ(ep.port, 9001);
  EXPECT_EQ(c.clusters[0].endpoints[1].port, 9002);
  EXPECT_EQ(c.clusters[0].endpoints[1].weight, 2U);
}

TEST(Resolve, UnknownHostIsAnErrorAtItsEndpoint) {
  const auto r = load_string(R"(listeners: [{listen: "127.0.0.1:0"}]
clusters:
  - name: remote
    endpoints:
      - "127.0.0.1:9001"
      - "nosuch.invalid:1"
      - {address: "nosuch.invalid:2"}
)",
                             "t.yaml");
  ASSERT_EQ(r.errors.size(), 2U) << testing::joined(testing::error_lines(r));
  const std::string prefix =
      "t.yaml:6:9: clusters[0].endpoints[1]: cannot resolve 'nosuch.invalid': ";
  EXPECT_EQ(r.errors[0].to_string().substr(0, prefix.size()), prefix);
  EXPECT_GT(r.errors[0].message.size(), std::string("cannot resolve 'nosuch.invalid': ").size());
  EXPECT_EQ(r.errors[1].path, "clusters[0].endpoints[2].address");
  EXPECT_EQ(r.errors[1].line, 7);
  EXPECT_EQ(r.errors[1].column, 19);
  EXPECT_FALSE(r.config.has_value());
}

}  // namespace
}  // namespace turnpike::config
