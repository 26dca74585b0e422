#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "core/generations.h"

namespace turnpike::core {
namespace {

using namespace std::chrono_literals;
using Clock = Generations::Clock;

SnapshotPtr snapshot(std::uint64_t gen, unsigned max_live = 3,
                     std::chrono::milliseconds drain = 60s) {
  auto r = config::load_string(
      "listeners: [{name: p, listen: 127.0.0.1:18888}]\n"
      "routes: [{name: r, match: {path: /v" +
          std::to_string(gen) +
          "}, respond: {status: 200}}]\n"
          "reload: {max_live_generations: " +
          std::to_string(max_live) +
          ", generation_drain_timeout: " + std::to_string(drain.count()) + "ms}\n",
      "t.yaml");
  EXPECT_TRUE(r.errors.empty()) << (r.errors.empty() ? "" : r.errors[0].to_string());
  return std::make_shared<const Snapshot>(std::move(*r.config), gen);
}

TEST(Generations, ReleasesWhatNoWorkerReferences) {
  const auto t0 = Clock::now();
  Generations g(snapshot(1));
  SnapshotPtr pinned = g.current();  // a worker's reference
  g.add(snapshot(2), t0);
  g.add(snapshot(3), t0);
  EXPECT_EQ(g.live(), 3u);
  EXPECT_EQ(g.collect(), 1u);  // generation 2: only the tracker held it
  EXPECT_EQ(g.live(), 2u);
  pinned.reset();
  EXPECT_EQ(g.collect(), 1u);
  EXPECT_EQ(g.live(), 1u);
  EXPECT_EQ(g.current()->generation, 3u);
  EXPECT_EQ(g.collect(), 0u);  // the current one is never released
}

TEST(Generations, CapClosesTheOldestOnce) {
  const auto t0 = Clock::now();
  Generations g(snapshot(1));
  std::vector<SnapshotPtr> pins{g.current()};
  for (std::uint64_t n = 2; n <= 4; ++n) {
    g.add(snapshot(n, 3), t0);
    pins.push_back(g.current());
  }
  // Four live, cap three: generation 1 goes.
  EXPECT_EQ(g.due_for_close(t0), std::vector<std::uint64_t>{1});
  EXPECT_EQ(g.open(), 3u);
  EXPECT_EQ(g.live(), 4u);  // listed as closing until its requests are gone
  EXPECT_TRUE(g.due_for_close(t0).empty());
  pins.erase(pins.begin());
  g.collect();
  EXPECT_EQ(g.live(), 3u);
  // Two more at once: the two oldest go.
  for (std::uint64_t n = 5; n <= 6; ++n) {
    g.add(snapshot(n, 3), t0);
    pins.push_back(g.current());
  }
  EXPECT_EQ(g.due_for_close(t0), (std::vector<std::uint64_t>{2, 3}));
}

TEST(Generations, DrainTimeoutClosesSupersededOnly) {
  const auto t0 = Clock::now();
  Generations g(snapshot(1, 8, 1000ms));
  SnapshotPtr pin = g.current();
  EXPECT_TRUE(g.due_for_close(t0 + 1h).empty());  // the current one never times out
  g.add(snapshot(2, 8, 1000ms), t0 + 10s);
  EXPECT_TRUE(g.due_for_close(t0 + 10s + 999ms).empty());
  EXPECT_EQ(g.due_for_close(t0 + 11s), std::vector<std::uint64_t>{1});
}

TEST(Generations, JsonListsNewestFirstWithUsage) {
  const auto t0 = Clock::now();
  Generations g(snapshot(1));
  SnapshotPtr pin = g.current();
  g.add(snapshot(2), t0 + 2s);
  const auto j = g.to_json({{1, 3, 2}}, t0 + 3s);
  EXPECT_EQ(j["current"], 2);
  EXPECT_EQ(j["live"], 2);
  EXPECT_EQ(j["max_live_generations"], 3);
  ASSERT_EQ(j["generations"].size(), 2u);
  EXPECT_EQ(j["generations"][0]["generation"], 2);
  EXPECT_EQ(j["generations"][0]["state"], "current");
  EXPECT_EQ(j["generations"][0]["requests"], 0);
  EXPECT_EQ(j["generations"][1]["state"], "draining");
  EXPECT_EQ(j["generations"][1]["requests"], 3);
  EXPECT_EQ(j["generations"][1]["connections"], 2);
  EXPECT_EQ(j["generations"][1]["superseded_ms_ago"], 1000);
  EXPECT_EQ(j["generations"][1]["digest"].get<std::string>().size(), 64u);
}

}  // namespace
}  // namespace turnpike::core
