// The process-wide token buckets of `rate_limit` (store: local, and the local half of
// sync: async): GCRA ("generic cell rate algorithm", a token bucket kept as one number per key,
// its theoretical arrival time) in a fixed-size open-addressing table of atomics. Every worker
// updates the same slot with a compare-exchange loop, so the budget is exact across workers
// with no lock, and memory is bounded: a slot whose bucket is full again (TAT in the past) is
// indistinguishable from an absent key and is reused by the next key that needs room.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string_view>

namespace turnpike::filters::rate_limit {

/// A 64-bit hash of a limit key that is the same in every build and process (FNV-1a with a
/// final avalanche), so instances sharing Redis agree on names; never 0 (0 marks a free slot).
inline std::uint64_t key_hash(std::string_view key) noexcept {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h ? h : 1;
}

class GcraTable {
 public:
  /// How far from its home slot a key may land; past that the table is full there.
  static constexpr std::size_t kProbe = 16;

  struct Outcome {
    bool allowed = true;
    bool tracked = true;               // false: no free slot near the key's (admitted, untracked)
    bool fresh = false;                // admitted from a full bucket (a new or long-idle key)
    std::uint64_t remaining = 0;       // requests that would still pass right now
    std::uint64_t retry_after_ns = 0;  // denied: until the next request can pass
    std::uint64_t reset_ns = 0;        // until the bucket is full again
    std::size_t slot = 0;
  };

  /// `capacity` is rounded up to a power of two; `interval_ns` is the time one request costs
  /// (period / count), `burst` how many may pass at once.
  GcraTable(std::size_t capacity, std::uint64_t interval_ns, std::uint64_t burst)
      : mask_(std::bit_ceil(std::max<std::size_t>(capacity, kProbe)) - 1),
        slots_(std::make_unique<Slot[]>(mask_ + 1)),
        interval_(std::max<std::uint64_t>(interval_ns, 1)),
        limit_(interval_ * std::max<std::uint64_t>(burst, 1)),
        seed_(random_seed()) {}

  std::size_t capacity() const noexcept { return mask_ + 1; }
  std::uint64_t interval_ns() const noexcept { return interval_; }
  std::uint64_t burst() const noexcept { return limit_ / interval_; }

  /// One request for the key hashed to `h` at `now_ns` (a monotonic clock). Thread-safe and
  /// lock-free. `count_unsynced`: also count it for the next Redis reconciliation, unless it
  /// is `fresh` (the caller then asks Redis itself).
  Outcome acquire(std::uint64_t h, std::uint64_t now_ns, bool count_unsynced = false) noexcept {
    const std::size_t home = home_of(h);
    // The key's own slot first: keys never go back to 0, so none lies past a free slot.
    for (std::size_t i = 0; i < kProbe; ++i) {
      Slot& s = slots_[(home + i) & mask_];
      const std::uint64_t k = s.key.load(std::memory_order_acquire);
      if (k == h) return update(s, (home + i) & mask_, now_ns, count_unsynced);
      if (k == 0) break;
    }
    // Then the first free slot, or one whose bucket has refilled (the same as no entry).
    for (std::size_t i = 0; i < kProbe; ++i) {
      const std::size_t idx = (home + i) & mask_;
      Slot& s = slots_[idx];
      std::uint64_t k = s.key.load(std::memory_order_acquire);
      if (k == h) return update(s, idx, now_ns, count_unsynced);
      if (k != 0 && s.tat.load(std::memory_order_relaxed) > now_ns) continue;
      if (s.key.compare_exchange_strong(k, h, std::memory_order_acq_rel) || k == h) {
        if (k != h) s.unsynced.store(0, std::memory_order_relaxed);
        return update(s, idx, now_ns, count_unsynced);
      }
    }
    Outcome o;
    o.tracked = false;
    o.remaining = burst() - 1;
    return o;
  }

  /// Reconciliation (sync: async): the admissions counted since the last call, slot by slot;
  /// `f(slot, key, count)` for each slot whose key still has a bucket that is not full (so a
  /// slot another instance may have drained is refreshed even when this one admitted nothing).
  template <typename F>
  void drain_unsynced(std::uint64_t now_ns, F&& f) {
    for (std::size_t i = 0; i <= mask_; ++i) {
      Slot& s = slots_[i];
      const std::uint64_t k = s.key.load(std::memory_order_acquire);
      if (k == 0) continue;
      const std::uint64_t n = s.unsynced.exchange(0, std::memory_order_acq_rel);
      if (n == 0 && s.tat.load(std::memory_order_relaxed) <= now_ns) continue;
      f(i, k, n);
    }
  }

  /// Gives back counts a failed reconciliation could not deliver.
  void restore_unsynced(std::size_t slot, std::uint64_t key, std::uint64_t n) noexcept {
    Slot& s = slots_[slot & mask_];
    if (s.key.load(std::memory_order_acquire) == key)
      s.unsynced.fetch_add(n, std::memory_order_relaxed);
  }

  /// Moves a slot's TAT forward to at least `tat_ns` (the shared state Redis reported), never
  /// back: admissions made here since the report was asked for stay counted.
  void merge(std::size_t slot, std::uint64_t key, std::uint64_t tat_ns) noexcept {
    Slot& s = slots_[slot & mask_];
    if (s.key.load(std::memory_order_acquire) != key) return;
    std::uint64_t cur = s.tat.load(std::memory_order_relaxed);
    while (cur < tat_ns && !s.tat.compare_exchange_weak(cur, tat_ns, std::memory_order_acq_rel,
                                                        std::memory_order_relaxed)) {
    }
  }

 private:
  struct Slot {
    std::atomic<std::uint64_t> key{0};       // key_hash(), 0 = never used
    std::atomic<std::uint64_t> tat{0};       // theoretical arrival time, ns
    std::atomic<std::uint64_t> unsynced{0};  // admissions not yet reported to Redis
  };

  Outcome update(Slot& s, std::size_t idx, std::uint64_t now, bool count_unsynced) noexcept {
    Outcome o;
    o.slot = idx;
    std::uint64_t tat = s.tat.load(std::memory_order_relaxed);
    for (;;) {
      const std::uint64_t base = std::max(tat, now);
      const std::uint64_t next = base + interval_;
      if (next - now > limit_) {
        o.allowed = false;
        o.remaining = 0;
        o.retry_after_ns = next - now - limit_;
        o.reset_ns = base - now;
        return o;
      }
      if (s.tat.compare_exchange_weak(tat, next, std::memory_order_acq_rel,
                                      std::memory_order_relaxed)) {
        o.fresh = tat <= now;
        if (count_unsynced && !o.fresh) s.unsynced.fetch_add(1, std::memory_order_relaxed);
        o.remaining = (now + limit_ - next) / interval_;
        o.reset_ns = next - now;
        return o;
      }
    }
  }

  // Where a key's probe starts: its hash mixed with a per-table random seed. The key hash is
  // stable across processes (Redis names depend on it), so without the seed a client that
  // controls its key could compute keys that crowd one region of the table.
  std::size_t home_of(std::uint64_t h) const noexcept {
    std::uint64_t x = h ^ seed_;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return static_cast<std::size_t>(x) & mask_;
  }

  static std::uint64_t random_seed() {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }

  std::size_t mask_;
  std::unique_ptr<Slot[]> slots_;
  std::uint64_t interval_;
  std::uint64_t limit_;  // burst × interval: how far ahead of now the TAT may run
  std::uint64_t seed_;
};

}  // namespace turnpike::filters::rate_limit
