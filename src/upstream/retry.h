// Retry decisions (routes[].retry): whether a failed try is sent again, how long to wait before
// it (backoff), and how long each try may take. Pure policy, no I/O: the exchange reports what
// each try came to and asks. The caps that protect a cluster from retry storms (max_retries and
// the retry budget) are the pool's (ClusterPool::retry_started), since they count every request
// of the worker. Owning worker thread only.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string_view>

#include "turnpike/config/config.h"

namespace turnpike::upstream {

/// RFC 9110 section 9.2.2: a method whose request may be sent twice with the effect of once.
bool is_idempotent(std::string_view method) noexcept;

/// What a try came to.
struct TryResult {
  enum class Kind {
    ConnectFailure,  // no connection: nothing reached the backend
    Refused,         // HTTP/2 REFUSED_STREAM or GOAWAY below the stream: not processed
    Reset,           // the connection failed before the response head
    Timeout,         // no response head within the try's time
    Status,          // a response head
  };
  Kind kind = Kind::Status;
  int status = 0;      // Kind::Status
  bool stale = false;  // Reset on a pooled connection before any response byte: the keep-alive race

  /// Whether the backend may have received (and acted on) the request. Only such tries count
  /// against max_retries and the retry budget: the others add no load to any backend.
  bool may_have_reached_backend() const noexcept {
    return !(kind == Kind::ConnectFailure || kind == Kind::Refused ||
             (kind == Kind::Reset && stale));
  }
};

class RetryState {
 public:
  using Clock = std::chrono::steady_clock;

  /// `policy`: the route's retry block, or null (the defaults: what cannot have reached the
  /// backend, once). `endpoints`: the cluster's size (a failed connect in a cluster of one is
  /// not retried by default: it would only double the wait).
  RetryState(const config::RetryPolicy* policy, std::string_view method,
             std::size_t endpoints) noexcept;

  /// Whether a response with `status` could be retried at all (checked before anything else
  /// is looked at; false for every status without a retry block).
  bool retriable_status(int status) const noexcept {
    return policy_ != nullptr && retriable_status_slow(status);
  }

  /// After try number tries() failed as `r`: whether to send another. `replayable`: the whole
  /// request can be sent again (its body, if any, is still held). Counts the try.
  bool next(const TryResult& r, bool replayable) noexcept;

  /// Tries so far.
  std::uint32_t tries() const noexcept { return tries_; }

  /// The wait before the retry about to go (full jitter over an exponential ceiling); zero
  /// without a retry block. `random`: any 64-bit random value.
  std::chrono::milliseconds backoff(std::uint64_t random) const noexcept;

  /// The time the coming try may take for its response head: what is left of the route's
  /// `timeout` (counted from `head_deadline`), at most per_try_timeout.
  std::chrono::milliseconds try_timeout(Clock::time_point head_deadline,
                                        Clock::time_point now) const noexcept;
  /// try_timeout() of the first try (started at the clock reading the route's timeout is
  /// counted from): the route's timeout, at most per_try_timeout.
  std::chrono::milliseconds first_try_timeout(
      std::chrono::milliseconds route_timeout) const noexcept {
    if (policy_ == nullptr || !policy_->per_try_timeout) return route_timeout;
    return std::min(route_timeout, *policy_->per_try_timeout);
  }

  /// The retry budget's cap on retries in flight for `active` requests in flight (none: no
  /// budget, no retry block).
  std::uint32_t budget(std::uint32_t active) const noexcept;
  bool configured() const noexcept { return policy_ != nullptr; }

 private:
  bool retriable_status_slow(int status) const noexcept;
  bool idempotent() const noexcept;      // RFC 9110: may run twice with the effect of once
  bool method_allowed() const noexcept;  // listed in the policy's methods
  // Only what the usual request (no failure) needs is set up front: the method is looked at
  // only when a try failed.
  const config::RetryPolicy* policy_;
  std::string_view method_;
  std::size_t endpoints_;
  std::uint32_t tries_ = 0;
};

}  // namespace turnpike::upstream
