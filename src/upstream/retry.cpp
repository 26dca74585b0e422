#include "upstream/retry.h"

#include <algorithm>

namespace turnpike::upstream {

bool is_idempotent(std::string_view m) noexcept {
  return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "PUT" || m == "DELETE" || m == "TRACE";
}

RetryState::RetryState(const config::RetryPolicy* policy, std::string_view method,
                       std::size_t endpoints) noexcept
    : policy_(policy), method_(method), endpoints_(endpoints) {}

bool RetryState::idempotent() const noexcept {
  return is_idempotent(method_);
}

bool RetryState::method_allowed() const noexcept {
  if (policy_ == nullptr) return idempotent();
  return std::find(policy_->methods.begin(), policy_->methods.end(), method_) !=
         policy_->methods.end();
}

bool RetryState::retriable_status_slow(int status) const noexcept {
  if (status < 500 && policy_->statuses.empty()) return false;
  const config::RetryPolicy& p = *policy_;
  if (p.on_5xx && status >= 500 && status <= 599) return true;
  if (p.on_gateway_error && (status == 502 || status == 503 || status == 504)) return true;
  return std::find(p.statuses.begin(), p.statuses.end(), status) != p.statuses.end();
}

bool RetryState::next(const TryResult& r, bool replayable) noexcept {
  ++tries_;
  if (!replayable) return false;
  using Kind = TryResult::Kind;
  if (policy_ == nullptr) {
    // The defaults: once, and only what cannot run twice by mistake.
    if (tries_ >= 2) return false;
    switch (r.kind) {
      case Kind::ConnectFailure:
        return endpoints_ >= 2;
      case Kind::Refused:
        return true;
      case Kind::Reset:
        return r.stale && idempotent();
      case Kind::Timeout:
      case Kind::Status:
        return false;
    }
    return false;
  }
  const config::RetryPolicy& p = *policy_;
  if (tries_ >= p.attempts) return false;
  switch (r.kind) {
    case Kind::ConnectFailure:
      return p.on_connect_failure;
    case Kind::Refused:
      return p.on_refused_stream;
    case Kind::Reset:
      // The keep-alive race on an idempotent request is retried whatever `on` says.
      if (r.stale && idempotent()) return true;
      return p.on_reset && method_allowed();
    case Kind::Timeout:
      return p.on_timeout && method_allowed();
    case Kind::Status:
      return method_allowed() && retriable_status(r.status);
  }
  return false;
}

std::chrono::milliseconds RetryState::backoff(std::uint64_t random) const noexcept {
  if (policy_ == nullptr || tries_ == 0) return std::chrono::milliseconds(0);
  const auto base = policy_->backoff_base.count();
  const auto max = policy_->backoff_max.count();
  // The ceiling doubles with each retry: base, 2 base, 4 base... up to max.
  const std::uint32_t shift = std::min<std::uint32_t>(tries_ - 1, 20);
  const auto ceiling = std::min<std::int64_t>(max, base << shift);
  if (ceiling <= 0) return std::chrono::milliseconds(0);
  return std::chrono::milliseconds(
      static_cast<std::int64_t>(random % static_cast<std::uint64_t>(ceiling + 1)));
}

std::chrono::milliseconds RetryState::try_timeout(Clock::time_point head_deadline,
                                                  Clock::time_point now) const noexcept {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(head_deadline - now);
  if (left < std::chrono::milliseconds(1)) left = std::chrono::milliseconds(1);
  if (policy_ != nullptr && policy_->per_try_timeout)
    left = std::min(left, *policy_->per_try_timeout);
  return left;
}

std::uint32_t RetryState::budget(std::uint32_t active) const noexcept {
  if (policy_ == nullptr) return UINT32_MAX;
  const std::uint64_t share = std::uint64_t{active} * policy_->budget_percent / 100;
  return static_cast<std::uint32_t>(
      std::max<std::uint64_t>(share, policy_->budget_min_concurrency));
}

}  // namespace turnpike::upstream
