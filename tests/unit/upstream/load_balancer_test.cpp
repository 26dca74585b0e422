// upstream::LoadBalancer: each policy's spread, and the consistent-hash policies' promise that
// adding or removing one host of N moves about 1/N of the keys.
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "upstream/load_balancer.h"

namespace turnpike::upstream {
namespace {

std::vector<HostInfo> hosts(const std::vector<std::uint32_t>& weights) {
  std::vector<HostInfo> out;
  for (std::size_t i = 0; i < weights.size(); ++i)
    out.push_back({"10.0.0." + std::to_string(i + 1) + ":8080", weights[i]});
  return out;
}

std::vector<std::size_t> counts(LoadBalancer& lb, std::size_t n_hosts, int picks,
                                const std::vector<std::uint32_t>& active = {}) {
  std::vector<std::uint32_t> act = active.empty() ? std::vector<std::uint32_t>(n_hosts) : active;
  std::vector<std::size_t> c(n_hosts);
  for (int i = 0; i < picks; ++i)
    ++c[lb.pick(act, std::nullopt, {})];
  return c;
}

TEST(LoadBalancer, HashIsTheSameOnEveryBuild) {
  // Pinned: instances of different builds must agree on where a key goes.
  EXPECT_EQ(hash_bytes(""), 0xefd01f60ba992926ULL);
  EXPECT_EQ(hash_bytes("alice"), 0x3507d047a67c08f4ULL);
  EXPECT_EQ(hash_bytes("alice"), hash_bytes("alice"));
  EXPECT_NE(hash_bytes("alice"), hash_bytes("alicf"));
}

TEST(LoadBalancer, RoundRobinIsSmoothAndWeighted) {
  auto lb = LoadBalancer::make("round_robin", hosts({5, 1, 1}), 1);
  std::string seq;
  std::vector<std::uint32_t> active(3);
  for (int i = 0; i < 7; ++i)
    seq += static_cast<char>('a' + lb->pick(active, std::nullopt, {}));
  EXPECT_EQ(seq, "aabacaa");  // nginx's smooth sequence: never five in a row
  auto equal = LoadBalancer::make("round_robin", hosts({1, 1, 1}), 1);
  seq.clear();
  for (int i = 0; i < 6; ++i)
    seq += static_cast<char>('a' + equal->pick(active, std::nullopt, {}));
  EXPECT_EQ(seq, "abcabc");
}

TEST(LoadBalancer, RandomFollowsTheWeights) {
  auto lb = LoadBalancer::make("random", hosts({1, 3}), 42);
  auto c = counts(*lb, 2, 40000);
  EXPECT_NEAR(static_cast<double>(c[1]) / 40000, 0.75, 0.02);
}

TEST(LoadBalancer, LeastRequestPrefersTheLessLoaded) {
  auto lb = LoadBalancer::make("least_request", hosts({1, 1, 1}), 7);
  // Host 0 holds 10 requests, the others none: it can win no draw.
  auto c = counts(*lb, 3, 3000, {10, 0, 0});
  EXPECT_EQ(c[0], 0u);
  // Host 0 idle, the others busy: it wins every draw it is in (two of three).
  c = counts(*lb, 3, 30000, {0, 4, 4});
  EXPECT_NEAR(static_cast<double>(c[0]) / 30000, 2.0 / 3, 0.02);
  // Weighted: host 1 has twice the weight, so twice the requests per unit of load.
  auto w = LoadBalancer::make("least_request", hosts({1, 2}), 7);
  c = counts(*w, 2, 1000, {2, 3});  // (2+1)/1 = 3 vs (3+1)/2 = 2: host 1 is less loaded
  EXPECT_EQ(c[0], 0u);
}

TEST(LoadBalancer, EveryPolicySkipsWhatItMayNotPick) {
  for (const char* policy : {"round_robin", "least_request", "random", "ring_hash", "maglev"}) {
    for (const auto& weights :
         {std::vector<std::uint32_t>{1, 1, 1}, std::vector<std::uint32_t>{5, 1, 2}}) {
      auto lb = LoadBalancer::make(policy, hosts(weights), 9);
      std::vector<std::uint32_t> active(3);
      const std::vector<std::uint8_t> mask = {0, 1, 1};
      for (int i = 0; i < 300; ++i) {
        const auto key = hash_bytes(std::to_string(i));
        EXPECT_NE(lb->pick(active, key, Usable{mask}), 0u) << policy;
        // A retry avoiding host 2 with host 0 ejected: host 1 is all that is left.
        EXPECT_EQ(lb->pick(active, key, Usable{mask, 2}), 1u) << policy;
        // Nothing allowed: a host is still returned (the caller's panic rule decides).
        const std::vector<std::uint8_t> none = {0, 0, 0};
        EXPECT_LT(lb->pick(active, key, Usable{none}), 3u) << policy;
      }
    }
  }
}

class ConsistentHash : public ::testing::TestWithParam<const char*> {};

TEST_P(ConsistentHash, OneKeyOneHostAndASpreadByWeight) {
  auto lb = LoadBalancer::make(GetParam(), hosts({1, 1, 2}), 3);
  std::vector<std::uint32_t> active(3);
  std::vector<std::size_t> c(3);
  for (int k = 0; k < 40000; ++k) {
    const auto key = hash_bytes("user-" + std::to_string(k));
    const std::size_t h = lb->pick(active, key, {});
    EXPECT_EQ(lb->pick(active, key, {}), h);
    ++c[h];
  }
  EXPECT_NEAR(static_cast<double>(c[0]) / 40000, 0.25, 0.06);
  EXPECT_NEAR(static_cast<double>(c[1]) / 40000, 0.25, 0.06);
  EXPECT_NEAR(static_cast<double>(c[2]) / 40000, 0.50, 0.06);
  // No key: spread at random over every host.
  auto r = counts(*lb, 3, 3000);
  for (auto n : r)
    EXPECT_GT(n, 400u);
}

TEST_P(ConsistentHash, AddingOrRemovingOneHostOfNMovesAboutOneNth) {
  const int kKeys = 20000;
  auto owner = [&](LoadBalancer& lb, std::size_t n, const std::vector<HostInfo>& hs) {
    std::vector<std::uint32_t> active(n);
    std::vector<std::string> out;
    for (int k = 0; k < kKeys; ++k)
      out.push_back(hs[lb.pick(active, hash_bytes("key-" + std::to_string(k)), {})].id);
    return out;
  };
  const auto five = hosts({1, 1, 1, 1, 1});
  auto four = five;
  four.erase(four.begin() + 2);  // host 3 of 5 goes
  auto lb5 = LoadBalancer::make(GetParam(), five, 1);
  auto lb4 = LoadBalancer::make(GetParam(), four, 2);
  const auto a = owner(*lb5, 5, five);
  const auto b = owner(*lb4, 4, four);
  int moved = 0;
  int moved_without_cause = 0;
  for (int k = 0; k < kKeys; ++k) {
    if (a[k] == b[k]) continue;
    ++moved;
    if (a[k] != five[2].id) ++moved_without_cause;
  }
  // Removing one of five: its fifth of the keys must move, and little else.
  EXPECT_NEAR(static_cast<double>(moved) / kKeys, 0.2, 0.06) << GetParam();
  EXPECT_LT(static_cast<double>(moved_without_cause) / kKeys, 0.03) << GetParam();
}

TEST_P(ConsistentHash, AnEjectedHostsKeysMoveAndNoOthers) {
  const auto hs = hosts({1, 1, 1, 1});
  auto lb = LoadBalancer::make(GetParam(), hs, 5);
  std::vector<std::uint32_t> active(4);
  const std::vector<std::uint8_t> mask = {1, 0, 1, 1};  // host 1 ejected
  Usable usable{mask};
  int moved_without_cause = 0;
  for (int k = 0; k < 10000; ++k) {
    const auto key = hash_bytes("k" + std::to_string(k));
    const std::size_t before = lb->pick(active, key, {});
    const std::size_t after = lb->pick(active, key, usable);
    EXPECT_NE(after, 1u);
    if (before != 1 && after != before) ++moved_without_cause;
  }
  EXPECT_EQ(moved_without_cause, 0) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Policies, ConsistentHash, ::testing::Values("ring_hash", "maglev"));

}  // namespace
}  // namespace turnpike::upstream
