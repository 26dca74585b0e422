// Endpoint host names are resolved when the config loads (on the control thread).
#include <gtest/gtest.h>

#include "turnpike/config/config.h"
#include "turnpike/config/to_json.h"
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

// discovery: dns: names are left for the resolver thread (a load never waits for DNS, and a
// name that does not resolve now is no error); IP literals are kept as they are.
TEST(Resolve, DnsDiscoveryDoesNotResolveAtLoad) {
  const Config c = testing::expect_valid(R"(listeners: [{listen: "127.0.0.1:0"}]
clusters:
  - name: api
    discovery: dns
    dns: {refresh: 250ms, respect_ttl: true, family: v6, resolvers: ["127.0.0.1:5353", "10.0.0.2", "::1", "[::2]:54"]}
    endpoints: ["nosuch.invalid:9001", {address: "10.1.2.3:80", weight: 3}]
  - {name: plain, endpoints: ["127.0.0.1:9"]}
)");
  const Cluster& api = c.clusters[0];
  EXPECT_TRUE(api.dns_discovery);
  EXPECT_TRUE(api.endpoints.empty());
  ASSERT_EQ(api.names.size(), 2U);
  EXPECT_EQ(api.names[0].written, "nosuch.invalid:9001");
  EXPECT_EQ(api.names[0].address, "");
  EXPECT_EQ(api.names[0].port, 9001);
  EXPECT_EQ(api.names[1].address, "10.1.2.3");
  EXPECT_EQ(api.names[1].weight, 3U);
  EXPECT_EQ(api.dns.refresh, std::chrono::milliseconds(250));
  EXPECT_TRUE(api.dns.respect_ttl);
  EXPECT_EQ(api.dns.family, DnsSettings::Family::V6);
  EXPECT_EQ(api.dns.resolvers, "127.0.0.1:5353,10.0.0.2:53,[::1]:53,[::2]:54");
  EXPECT_FALSE(c.clusters[1].dns_discovery);
  EXPECT_EQ(c.clusters[1].endpoints.size(), 1U);
  // GET /config shows the names as written, and its output loads back the same.
  const auto j = to_json(c);
  EXPECT_EQ(j["clusters"][0]["discovery"], "dns");
  EXPECT_EQ(j["clusters"][0]["endpoints"][0]["address"], "nosuch.invalid:9001");
  EXPECT_EQ(j["clusters"][0]["dns"]["resolvers"][3], "[::2]:54");
  const Config again = testing::expect_valid(j.dump());
  EXPECT_EQ(again.clusters[0].dns.resolvers, api.dns.resolvers);
  EXPECT_EQ(again.clusters[0].names.size(), 2U);
}

}  // namespace
}  // namespace turnpike::config
