// DNS discovery without a DNS server of its own (test_dns_discovery.py runs it against dnsmasq):
// IP literals, a resolver nobody answers on, the change description, and a pool with no
// endpoint yet.
#include <gtest/gtest.h>

#include <chrono>

#include <boost/asio/io_context.hpp>

#include "upstream/cluster_pool.h"
#include "upstream/dns_discovery.h"

namespace turnpike::upstream {
namespace {

config::Endpoint written(std::string text, std::string address, std::uint16_t port) {
  config::Endpoint e;
  e.written = std::move(text);
  e.address = std::move(address);
  e.port = port;
  return e;
}

config::Config dns_config(std::vector<config::Endpoint> names, std::string resolvers = "") {
  config::Config cfg;
  config::Cluster& c = cfg.clusters.emplace_back();
  c.name = "api";
  c.dns_discovery = true;
  c.names = std::move(names);
  c.dns.refresh = config::Duration{100};
  c.dns.resolvers = std::move(resolvers);
  return cfg;
}

TEST(DnsDiscovery, LiteralsNeedNoLookup) {
  DnsDiscovery dns([] {});
  config::Config cfg =
      dns_config({written("10.0.0.1:80", "10.0.0.1", 80), written("[::1]:81", "::1", 81),
                  written("10.0.0.1:80", "10.0.0.1", 80)});  // listed twice: one endpoint
  dns.update(cfg);
  EXPECT_TRUE(dns.wait_first(std::chrono::milliseconds(0)));  // nothing to ask
  dns.fill(cfg);
  ASSERT_EQ(cfg.clusters[0].endpoints.size(), 2U);
  EXPECT_EQ(endpoint_label(cfg.clusters[0].endpoints[0]), "10.0.0.1:80");
  EXPECT_EQ(endpoint_label(cfg.clusters[0].endpoints[1]), "[::1]:81");
}

// Nothing listens on the resolver's port: c-ares is refused at once, the name has no endpoint
// (it never resolved), and the status says why. No crash, no wait for a timeout.
TEST(DnsDiscovery, AResolverNobodyAnswersOnLeavesTheNameWithoutEndpoints) {
  int changes = 0;
  DnsDiscovery dns([&] { ++changes; });
  config::Config cfg = dns_config({written("api.turnpike.test:80", "", 80)}, "127.0.0.1:9");
  dns.update(cfg);
  EXPECT_TRUE(dns.wait_first(std::chrono::seconds(10)));
  dns.fill(cfg);
  EXPECT_TRUE(cfg.clusters[0].endpoints.empty());
  const auto status = dns.status(cfg.clusters[0]);
  ASSERT_EQ(status.size(), 1U);
  EXPECT_EQ(status[0]["name"], "api.turnpike.test:80");
  EXPECT_TRUE(status[0]["resolved"].get<bool>());
  EXPECT_TRUE(status[0].contains("error")) << status.dump();
  EXPECT_EQ(changes, 0);  // a failure is no change of addresses
}

TEST(DnsDiscovery, SameEndpointsDescribesWhatChanged) {
  config::Config a = dns_config({written("x:80", "", 80)});
  config::Config b = a;
  a.clusters[0].endpoints = {written("x:80", "10.0.0.1", 80), written("x:80", "10.0.0.2", 80)};
  b.clusters[0].endpoints = {written("x:80", "10.0.0.2", 80), written("x:80", "10.0.0.3", 80)};
  std::vector<std::string> why;
  EXPECT_FALSE(same_dns_endpoints(a, b, why));
  ASSERT_EQ(why.size(), 1U);
  EXPECT_EQ(why[0], "cluster 'api': added 10.0.0.3:80; removed 10.0.0.1:80");
  // The same addresses in another order: the same.
  b.clusters[0].endpoints = {written("x:80", "10.0.0.2", 80), written("x:80", "10.0.0.1", 80)};
  why.clear();
  EXPECT_TRUE(same_dns_endpoints(a, b, why));
  EXPECT_TRUE(why.empty());
}

// A DNS cluster before its names resolve: every policy builds, and the pool says there is no
// usable endpoint (the request is answered 503) instead of picking from nothing.
TEST(DnsDiscovery, APoolWithNoEndpointHasNoneUsable) {
  boost::asio::io_context io;
  for (const char* policy : {"round_robin", "least_request", "random", "ring_hash", "maglev"}) {
    config::Config cfg = dns_config({written("x:80", "", 80)});
    cfg.clusters[0].lb_policy = policy;
    ClusterPool pool(cfg.clusters[0], io.get_executor());
    EXPECT_EQ(pool.endpoint_count(), 0U) << policy;
    EXPECT_TRUE(pool.none_usable(std::chrono::steady_clock::now())) << policy;
  }
}

}  // namespace
}  // namespace turnpike::upstream
