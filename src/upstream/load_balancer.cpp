#include "upstream/load_balancer.h"

#include <algorithm>
#include <numeric>
#include <utility>

namespace turnpike::upstream {

std::uint64_t hash_bytes(std::string_view bytes) noexcept {
  std::uint64_t h = 14695981039346656037ULL;  // FNV-1a 64
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  h ^= h >> 33;  // MurmurHash3 fmix64
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

namespace {

// splitmix64: small, fast, and good enough to draw hosts.
class Random {
 public:
  explicit Random(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() noexcept {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, n) for n < 2^32 (Lemire's multiply-shift on 32 random bits; the bias is
  /// n / 2^32, negligible for host counts and weight totals).
  std::uint64_t below(std::uint64_t n) noexcept { return ((next() >> 32) * n) >> 32; }

 private:
  std::uint64_t state_;
};

// Draws a host in proportion to its weight: prefix sums and a binary search; uniform when the
// weights are equal.
class WeightedDraw {
 public:
  explicit WeightedDraw(const std::vector<HostInfo>& hosts) {
    std::uint64_t total = 0;
    bool equal = true;
    for (const auto& h : hosts) {
      total += h.weight;
      prefix_.push_back(total);
      if (h.weight != hosts.front().weight) equal = false;
    }
    if (equal) prefix_.clear();
    n_ = hosts.size();
    total_ = total;
  }
  std::size_t draw(Random& rng) const noexcept {
    if (prefix_.empty()) return static_cast<std::size_t>(rng.below(n_));
    const std::uint64_t r = rng.below(total_);
    return static_cast<std::size_t>(std::upper_bound(prefix_.begin(), prefix_.end(), r) -
                                    prefix_.begin());
  }
  /// A draw among the hosts `usable` allows: redrawn a few times, then the first allowed host
  /// after a random start; any host when none is allowed.
  std::size_t draw(Random& rng, const Usable& usable) const noexcept {
    std::size_t i = draw(rng);
    if (usable.all()) return i;
    for (int tries = 0; tries < 8 && !usable.allows(i); ++tries)
      i = draw(rng);
    if (usable.allows(i)) return i;
    return first_allowed(static_cast<std::size_t>(rng.below(n_)), usable, i);
  }
  std::size_t first_allowed(std::size_t start, const Usable& usable,
                            std::size_t otherwise) const noexcept {
    for (std::size_t k = 0; k < n_; ++k) {
      const std::size_t j = (start + k) % n_;
      if (usable.allows(j)) return j;
    }
    return otherwise;
  }

 private:
  std::vector<std::uint64_t> prefix_;  // empty: equal weights
  std::size_t n_ = 0;
  std::uint64_t total_ = 0;
};

class RoundRobin final : public LoadBalancer {
 public:
  explicit RoundRobin(const std::vector<HostInfo>& hosts) {
    for (const auto& h : hosts) {
      weight_.push_back(h.weight);
      if (h.weight != hosts.front().weight) equal_ = false;
    }
    current_.assign(hosts.size(), 0);
  }
  std::size_t pick(std::span<const std::uint32_t>, std::optional<std::uint64_t>,
                   const Usable& usable) noexcept override {
    const std::size_t n = weight_.size();
    if (n == 1) return 0;
    if (equal_) {
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t i = next_;
        if (++next_ == n) next_ = 0;
        if (usable.allows(i)) return i;
      }
      const std::size_t i = next_;  // none allowed: as if all were
      if (++next_ == n) next_ = 0;
      return i;
    }
    // Smooth weighted over the allowed hosts (all of them when none is).
    bool any = usable.all();
    for (std::size_t i = 0; i < n && !any; ++i)
      any = usable.allows(i);
    std::int64_t total = 0;
    std::size_t best = n;
    for (std::size_t i = 0; i < n; ++i) {
      if (any && !usable.allows(i)) continue;
      current_[i] += weight_[i];
      total += weight_[i];
      if (best == n || current_[i] > current_[best]) best = i;
    }
    current_[best] -= total;
    return best;
  }

 private:
  std::vector<std::int64_t> weight_;
  std::vector<std::int64_t> current_;
  std::size_t next_ = 0;
  bool equal_ = true;
};

class RandomPolicy final : public LoadBalancer {
 public:
  RandomPolicy(const std::vector<HostInfo>& hosts, std::uint64_t seed) : draw_(hosts), rng_(seed) {}
  std::size_t pick(std::span<const std::uint32_t>, std::optional<std::uint64_t>,
                   const Usable& usable) noexcept override {
    return draw_.draw(rng_, usable);
  }

 private:
  WeightedDraw draw_;
  Random rng_;
};

class LeastRequest final : public LoadBalancer {
 public:
  LeastRequest(const std::vector<HostInfo>& hosts, std::uint64_t seed) : draw_(hosts), rng_(seed) {
    for (const auto& h : hosts)
      weight_.push_back(h.weight);
  }
  std::size_t pick(std::span<const std::uint32_t> active, std::optional<std::uint64_t>,
                   const Usable& usable) noexcept override {
    const std::size_t n = weight_.size();
    if (n == 1) return 0;
    const std::size_t a = draw_.draw(rng_, usable);
    std::size_t b = draw_.draw(rng_, usable);
    for (int tries = 0; b == a && tries < 4; ++tries)
      b = draw_.draw(rng_, usable);
    if (b == a) {  // the draws agree (skewed weights): the contest is with any other host
      const auto start = static_cast<std::size_t>(rng_.below(n));
      for (std::size_t k = 0; k < n && b == a; ++k) {
        const std::size_t j = (start + k) % n;
        if (j != a && usable.allows(j)) b = j;
      }
      if (b == a) return a;  // the only host allowed
    }
    // Fewer active requests per unit of weight: (active_a + 1) / w_a vs (active_b + 1) / w_b.
    const std::uint64_t la = (std::uint64_t{active[a]} + 1) * weight_[b];
    const std::uint64_t lb = (std::uint64_t{active[b]} + 1) * weight_[a];
    if (la != lb) return la < lb ? a : b;
    return rng_.below(2) ? a : b;
  }

 private:
  std::vector<std::uint64_t> weight_;
  WeightedDraw draw_;
  Random rng_;
};

class RingHash final : public LoadBalancer {
 public:
  RingHash(const std::vector<HostInfo>& hosts, std::uint64_t seed) : fallback_(hosts), rng_(seed) {
    // 256 points per unit of weight, so a host's points depend on nothing but itself: removing
    // a host moves only its keys. Scaled down only past 8M points in all (memory).
    std::uint64_t total = 0;
    for (const auto& h : hosts)
      total += h.weight;
    const double scale = std::min(256.0, 8.0 * 1024 * 1024 / static_cast<double>(total));
    for (std::size_t i = 0; i < hosts.size(); ++i) {
      const auto points = std::max<std::uint64_t>(
          1, static_cast<std::uint64_t>(static_cast<double>(hosts[i].weight) * scale + 0.5));
      std::string name = hosts[i].id;
      name += '_';
      const std::size_t base = name.size();
      for (std::uint64_t p = 0; p < points; ++p) {
        name.resize(base);
        name += std::to_string(p);
        ring_.push_back({hash_bytes(name), static_cast<std::uint32_t>(i)});
      }
    }
    std::sort(ring_.begin(), ring_.end(), [](const Point& x, const Point& y) {
      return x.hash != y.hash ? x.hash < y.hash : x.host < y.host;
    });
  }
  std::size_t pick(std::span<const std::uint32_t>, std::optional<std::uint64_t> key,
                   const Usable& usable) noexcept override {
    if (!key) return fallback_.draw(rng_, usable);
    auto it = std::lower_bound(ring_.begin(), ring_.end(), *key,
                               [](const Point& p, std::uint64_t k) { return p.hash < k; });
    std::size_t i = static_cast<std::size_t>(it - ring_.begin()) % ring_.size();
    const std::size_t first = ring_[i].host;
    if (usable.all()) return first;
    for (std::size_t k = 0; k < ring_.size(); ++k) {  // on to the next allowed host's point
      const std::size_t host = ring_[(i + k) % ring_.size()].host;
      if (usable.allows(host)) return host;
    }
    return first;
  }

 private:
  struct Point {
    std::uint64_t hash;
    std::uint32_t host;
  };
  std::vector<Point> ring_;
  WeightedDraw fallback_;
  Random rng_;
};

class Maglev final : public LoadBalancer {
 public:
  static constexpr std::uint64_t kTableSize = 65537;  // prime, ~100 entries per host at 650 hosts

  Maglev(const std::vector<HostInfo>& hosts, std::uint64_t seed) : fallback_(hosts), rng_(seed) {
    struct Entry {
      std::uint64_t offset, skip, next = 0;
      double weight, target = 0;
    };
    std::vector<Entry> entries;
    double max_weight = 0;
    for (const auto& h : hosts)
      max_weight = std::max(max_weight, static_cast<double>(h.weight));
    for (const auto& h : hosts) {
      const std::uint64_t h1 = hash_bytes(h.id);
      const std::uint64_t h2 = hash_bytes(h.id + "#skip");
      entries.push_back({h1 % kTableSize, h2 % (kTableSize - 1) + 1, 0,
                         static_cast<double>(h.weight) / max_weight, 0});
    }
    constexpr std::uint32_t kEmpty = 0xffffffff;
    if (entries.empty()) return;  // never picked from (the pool has no endpoint)
    table_.assign(kTableSize, kEmpty);
    std::uint64_t filled = 0;
    // A host of the largest weight takes a slot every round; one of a third of it, every third.
    for (std::uint64_t round = 1; filled < kTableSize; ++round) {
      for (std::size_t i = 0; i < entries.size() && filled < kTableSize; ++i) {
        Entry& e = entries[i];
        if (static_cast<double>(round) * e.weight < e.target) continue;
        e.target += 1.0;
        std::uint64_t c = (e.offset + e.skip * e.next) % kTableSize;
        while (table_[c] != kEmpty) {
          ++e.next;
          c = (e.offset + e.skip * e.next) % kTableSize;
        }
        table_[c] = static_cast<std::uint32_t>(i);
        ++e.next;
        ++filled;
      }
    }
  }
  std::size_t pick(std::span<const std::uint32_t>, std::optional<std::uint64_t> key,
                   const Usable& usable) noexcept override {
    if (!key) return fallback_.draw(rng_, usable);
    const std::uint64_t slot = *key % kTableSize;
    const std::size_t first = table_[slot];
    if (usable.all() || usable.allows(first)) return first;
    for (std::uint64_t k = 1; k < kTableSize; ++k) {  // the next entries, spread like the table
      const std::size_t host = table_[(slot + k) % kTableSize];
      if (usable.allows(host)) return host;
    }
    return first;
  }

 private:
  std::vector<std::uint32_t> table_;
  WeightedDraw fallback_;
  Random rng_;
};

}  // namespace

std::unique_ptr<LoadBalancer> LoadBalancer::make(std::string_view policy,
                                                 std::vector<HostInfo> hosts, std::uint64_t seed) {
  if (policy == "least_request") return std::make_unique<LeastRequest>(hosts, seed);
  if (policy == "random") return std::make_unique<RandomPolicy>(hosts, seed);
  if (policy == "ring_hash") return std::make_unique<RingHash>(hosts, seed);
  if (policy == "maglev") return std::make_unique<Maglev>(hosts, seed);
  return std::make_unique<RoundRobin>(hosts);
}

}  // namespace turnpike::upstream
