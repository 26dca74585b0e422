#include "core/generations.h"

#include <algorithm>

#include "core/reload.h"

namespace turnpike::core {

Generations::Generations(SnapshotPtr initial) {
  entries_.push_back(Entry{std::move(initial)});
}

void Generations::add(SnapshotPtr next, Clock::time_point now) {
  entries_.back().superseded = now;
  entries_.push_back(Entry{std::move(next)});
}

std::size_t Generations::collect() {
  const std::size_t before = entries_.size();
  // Our reference is the only one left: no worker holds it as current or pins it. Workers only
  // ever pin the snapshot they hold as current, so a superseded generation released here cannot
  // come back.
  std::erase_if(entries_, [this](const Entry& e) {
    return &e != &entries_.back() && e.snapshot.use_count() == 1;
  });
  return before - entries_.size();
}

std::size_t Generations::open() const noexcept {
  return static_cast<std::size_t>(
      std::count_if(entries_.begin(), entries_.end(), [](const Entry& e) { return !e.closing; }));
}

std::vector<std::uint64_t> Generations::due_for_close(Clock::time_point now) {
  const config::ReloadSettings& limits = current()->config.reload;
  std::vector<std::uint64_t> due;
  std::size_t open_count = open();
  for (std::size_t i = 0; i + 1 < entries_.size(); ++i) {
    Entry& e = entries_[i];
    if (e.closing) continue;
    const bool over_cap = open_count > limits.max_live_generations;
    const bool timed_out = now - e.superseded >= limits.generation_drain_timeout;
    if (!over_cap && !timed_out) continue;
    e.closing = true;
    --open_count;
    due.push_back(e.snapshot->generation);
  }
  return due;
}

nlohmann::json Generations::to_json(const std::vector<GenerationUsage>& usage,
                                    Clock::time_point now) const {
  const auto& cur = *current();
  nlohmann::json list = nlohmann::json::array();
  for (auto it = entries_.rbegin(); it != entries_.rend(); ++it) {
    const Snapshot& s = *it->snapshot;
    GenerationUsage u;
    for (const auto& g : usage)
      if (g.generation == s.generation) u = g;
    const bool is_current = &s == &cur;
    nlohmann::json j = {
        {"generation", s.generation},
        {"state", is_current    ? "current"
                  : it->closing ? "closing"
                                : "draining"},
        {"loaded_at", rfc3339(s.loaded_at)},
        {"digest", s.config.digest},
        {"requests", u.requests},
        {"connections", u.connections},
    };
    if (!is_current) {
      j["superseded_ms_ago"] =
          std::chrono::duration_cast<std::chrono::milliseconds>(now - it->superseded).count();
    }
    list.push_back(std::move(j));
  }
  return {
      {"current", cur.generation},
      {"live", entries_.size()},
      {"max_live_generations", cur.config.reload.max_live_generations},
      {"generation_drain_timeout_ms", cur.config.reload.generation_drain_timeout.count()},
      {"generations", std::move(list)},
  };
}

}  // namespace turnpike::core
