// Endpoint choice for one cluster (`clusters[].lb_policy`), one instance per worker: no lock,
// no atomic. The policy sees the cluster's hosts (an identity and a weight, fixed for the
// balancer's life) and, per pick, what changes: the active requests per host (least_request) and
// the request's hash key (ring_hash, maglev).
//
// - round_robin: smooth weighted round robin (nginx's); a plain rotation when weights are equal.
// - random: weighted random.
// - least_request: power of two choices: two hosts drawn by weight, the one with fewer active
//   requests per unit of weight wins (Envoy's).
// - ring_hash: a ring of 256 points per unit of weight, placed by the hash of the host's
//   identity and the point's number; a key goes to the first point at or after its hash (Karger
//   et al.; ketama). A host's points depend only on itself, so removing one host of N moves its
//   keys (about 1/N) and no others; adding one takes about 1/(N+1).
// - maglev: a 65537-entry lookup table filled by each host's permutation in turn, weighted
//   (Eisenbud et al., NSDI 2016; Envoy's weighted variant): the same property, a flatter spread
//   and an O(1) lookup.
// A hashing policy given no key (the request lacks it) picks at random. Hosts the pick may
// not return (ejected; a retry's previous one) are passed over: the rotation skips them, a draw
// is redrawn, a hash walks on to the next point or table entry, so the keys of the hosts left
// stay where they were.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace turnpike::upstream {

/// A 64-bit hash of bytes, the same on every build and machine (FNV-1a, then MurmurHash3's
/// finalizer to spread FNV's weak low bits): Turnpike instances behind one load balancer send a
/// key to the same backend.
std::uint64_t hash_bytes(std::string_view bytes) noexcept;

/// Which hosts a pick may return: those whose `mask` entry is non-zero (an empty mask: all),
/// except `avoid` (a retry's previous host) when another is allowed. With none allowed, the
/// policy picks as if all were.
struct Usable {
  std::span<const std::uint8_t> mask;
  std::size_t avoid = static_cast<std::size_t>(-1);
  bool allows(std::size_t i) const noexcept { return i != avoid && (mask.empty() || mask[i] != 0); }
  bool all() const noexcept { return mask.empty() && avoid == static_cast<std::size_t>(-1); }
};

struct HostInfo {
  std::string id;  // stable identity: the endpoint's address and port
  std::uint32_t weight = 1;
};

class LoadBalancer {
 public:
  virtual ~LoadBalancer() = default;

  /// The index of the host for this request. `active[i]`: requests in flight on host i (this
  /// worker's); `key`: the request's hash key, if the policy hashes and the request has one.
  virtual std::size_t pick(std::span<const std::uint32_t> active, std::optional<std::uint64_t> key,
                           const Usable& usable) noexcept = 0;

  /// `policy`: one of round_robin, least_request, random, ring_hash, maglev (validated by the
  /// config loader). `seed`: the random source's, per worker. `hosts` is not empty.
  static std::unique_ptr<LoadBalancer> make(std::string_view policy, std::vector<HostInfo> hosts,
                                            std::uint64_t seed);
};

}  // namespace turnpike::upstream
