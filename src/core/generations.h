// The live configuration generations, kept by the control thread: the current snapshot and
// every older one a worker still references (requests pinned to it). The control thread holds a
// reference to each, so the last reference, and the cost of freeing a snapshot, is always here
// and never on a worker. It also bounds them: over max_live_generations, or once superseded for
// longer than generation_drain_timeout, a generation is marked closing and the workers close the
// requests still pinned to it. Control thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/snapshot.h"

namespace turnpike::core {

/// Requests and connections pinned to one generation, summed over the workers.
struct GenerationUsage {
  std::uint64_t generation = 0;
  std::uint64_t requests = 0;
  std::uint64_t connections = 0;
};

class Generations {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Generations(SnapshotPtr initial);

  /// `next` becomes current; the previous current one is superseded at `now`.
  void add(SnapshotPtr next, Clock::time_point now = Clock::now());

  /// Releases the superseded generations no worker references any more (they are freed here).
  /// Returns how many were released.
  std::size_t collect();

  /// The generations whose pinned requests must be closed now, oldest first: the oldest ones
  /// beyond max_live_generations (closing ones do not count towards it), and those superseded
  /// at least generation_drain_timeout ago. Each is returned once; it stays listed (as
  /// "closing") until its requests have gone. Limits come from the current config.
  std::vector<std::uint64_t> due_for_close(Clock::time_point now = Clock::now());

  /// Generations still referenced, current included.
  std::size_t live() const noexcept { return entries_.size(); }
  /// Live generations that are not closing: the number the cap bounds.
  std::size_t open() const noexcept;
  const SnapshotPtr& current() const noexcept { return entries_.back().snapshot; }

  /// GET /config/generations.
  nlohmann::json to_json(const std::vector<GenerationUsage>& usage,
                         Clock::time_point now = Clock::now()) const;

 private:
  struct Entry {
    SnapshotPtr snapshot;
    Clock::time_point superseded{};  // when it stopped being current
    bool closing = false;
  };
  std::vector<Entry> entries_;  // oldest first; the last is current
};

}  // namespace turnpike::core
