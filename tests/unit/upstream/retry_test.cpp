#include "upstream/retry.h"

#include <gtest/gtest.h>

namespace turnpike::upstream {
namespace {

using Kind = TryResult::Kind;
using std::chrono::milliseconds;

TryResult result(Kind k, int status = 0, bool stale = false) {
  TryResult r;
  r.kind = k;
  r.status = status;
  r.stale = stale;
  return r;
}

TEST(Retry, DefaultsRetryOnlyWhatCannotHaveReachedTheBackendOnce) {
  RetryState get(nullptr, "GET", 3);
  EXPECT_TRUE(get.next(result(Kind::ConnectFailure), true));
  EXPECT_FALSE(get.next(result(Kind::ConnectFailure), true));  // once
  EXPECT_TRUE(RetryState(nullptr, "POST", 3).next(result(Kind::ConnectFailure), true));
  EXPECT_FALSE(RetryState(nullptr, "GET", 1).next(result(Kind::ConnectFailure), true));
  EXPECT_TRUE(RetryState(nullptr, "POST", 2).next(result(Kind::Refused), true));
  EXPECT_TRUE(RetryState(nullptr, "GET", 2).next(result(Kind::Reset, 0, true), true));
  EXPECT_FALSE(RetryState(nullptr, "POST", 2).next(result(Kind::Reset, 0, true), true));
  EXPECT_FALSE(RetryState(nullptr, "GET", 2).next(result(Kind::Reset), true));
  EXPECT_FALSE(RetryState(nullptr, "GET", 2).next(result(Kind::Timeout), true));
  EXPECT_FALSE(RetryState(nullptr, "GET", 2).next(result(Kind::Status, 503), true));
  EXPECT_FALSE(RetryState(nullptr, "GET", 2).retriable_status(503));
  // Nothing is retried that cannot be sent again whole.
  EXPECT_FALSE(RetryState(nullptr, "GET", 2).next(result(Kind::Refused), false));
  EXPECT_EQ(RetryState(nullptr, "GET", 2).backoff(12345), milliseconds(0));
}

TEST(Retry, PolicyConditionsAttemptsAndMethods) {
  config::RetryPolicy p;  // defaults: connect-failure, refused-stream, gateway-error
  p.attempts = 3;
  RetryState get(&p, "GET", 1);
  EXPECT_TRUE(get.retriable_status(502));
  EXPECT_TRUE(get.retriable_status(504));
  EXPECT_FALSE(get.retriable_status(500));
  EXPECT_TRUE(get.next(result(Kind::Status, 503), true));
  EXPECT_TRUE(get.next(result(Kind::Timeout), true));
  EXPECT_FALSE(get.next(result(Kind::Reset), true));  // the third try was the last
  EXPECT_EQ(get.tries(), 3U);
  // A POST that may have reached the backend is not sent again unless the route lists it...
  RetryState post(&p, "POST", 2);
  EXPECT_FALSE(post.next(result(Kind::Status, 503), true));
  EXPECT_FALSE(RetryState(&p, "POST", 2).next(result(Kind::Reset), true));
  EXPECT_FALSE(RetryState(&p, "POST", 2).next(result(Kind::Reset, 0, true), true));
  // ...but one that cannot have reached it is.
  EXPECT_TRUE(RetryState(&p, "POST", 2).next(result(Kind::ConnectFailure), true));
  EXPECT_TRUE(RetryState(&p, "POST", 2).next(result(Kind::Refused), true));
  p.methods.push_back("POST");
  EXPECT_TRUE(RetryState(&p, "POST", 2).next(result(Kind::Status, 503), true));
  // 5xx and retriable-status.
  p.on_5xx = true;
  p.statuses = {429};
  EXPECT_TRUE(RetryState(&p, "GET", 2).retriable_status(500));
  EXPECT_TRUE(RetryState(&p, "GET", 2).retriable_status(429));
  EXPECT_FALSE(RetryState(&p, "GET", 2).retriable_status(404));
  // Only connect failures.
  config::RetryPolicy c;
  c.on_refused_stream = c.on_reset = c.on_timeout = c.on_gateway_error = false;
  EXPECT_TRUE(RetryState(&c, "GET", 2).next(result(Kind::ConnectFailure), true));
  EXPECT_FALSE(RetryState(&c, "GET", 2).next(result(Kind::Timeout), true));
  EXPECT_FALSE(RetryState(&c, "GET", 2).retriable_status(503));
  // The keep-alive race on an idempotent request is retried whatever `on` says.
  EXPECT_TRUE(RetryState(&c, "GET", 2).next(result(Kind::Reset, 0, true), true));
}

TEST(Retry, BackoffIsFullJitterUnderADoublingCeiling) {
  config::RetryPolicy p;
  p.attempts = 10;
  p.backoff_base = milliseconds(25);
  p.backoff_max = milliseconds(250);
  RetryState r(&p, "GET", 2);
  r.next(result(Kind::ConnectFailure), true);
  EXPECT_EQ(r.backoff(25), milliseconds(25));  // ceiling 25 after the first try
  EXPECT_EQ(r.backoff(26), milliseconds(0));
  r.next(result(Kind::ConnectFailure), true);
  EXPECT_EQ(r.backoff(50), milliseconds(50));  // then 50
  for (int i = 0; i < 6; ++i)
    r.next(result(Kind::ConnectFailure), true);
  EXPECT_EQ(r.backoff(250), milliseconds(250));  // capped at max
  EXPECT_EQ(r.backoff(251), milliseconds(0));
  std::uint64_t seen_max = 0;
  for (std::uint64_t x = 0; x < 1000; ++x)
    seen_max = std::max<std::uint64_t>(seen_max, r.backoff(x * 7919).count());
  EXPECT_EQ(seen_max, 250U);
}

TEST(Retry, EachTryGetsWhatIsLeftOfTheTimeoutAtMostPerTry) {
  const auto now = RetryState::Clock::now();
  RetryState none(nullptr, "GET", 2);
  EXPECT_EQ(none.try_timeout(now + milliseconds(900), now), milliseconds(900));
  EXPECT_EQ(none.try_timeout(now - milliseconds(5), now), milliseconds(1));
  config::RetryPolicy p;
  p.per_try_timeout = milliseconds(300);
  RetryState r(&p, "GET", 2);
  EXPECT_EQ(r.try_timeout(now + milliseconds(900), now), milliseconds(300));
  EXPECT_EQ(r.try_timeout(now + milliseconds(200), now), milliseconds(200));
}

TEST(Retry, BudgetIsAShareOfRequestsInFlightOrTheMinimum) {
  config::RetryPolicy p;
  p.budget_percent = 20;
  p.budget_min_concurrency = 3;
  RetryState r(&p, "GET", 2);
  EXPECT_EQ(r.budget(0), 3U);
  EXPECT_EQ(r.budget(10), 3U);
  EXPECT_EQ(r.budget(100), 20U);
  EXPECT_EQ(RetryState(nullptr, "GET", 2).budget(100), UINT32_MAX);
}

}  // namespace
}  // namespace turnpike::upstream
