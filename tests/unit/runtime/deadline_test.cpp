// support::Deadline: many deadlines share one queue and one timer per io_context; each fires at
// its own time, in order, and never once cancelled or destroyed.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "support/deadline.h"

namespace turnpike::support {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using Clock = Deadline::Clock;

TEST(Deadline, ManyDeadlinesFireInOrderOfTheirTimes) {
  asio::io_context io;
  std::vector<int> order;
  std::vector<std::unique_ptr<Deadline>> ds;
  const int delays[] = {30, 5, 20, 10, 25, 15, 0, 35};
  for (int i = 0; i < 8; ++i) {
    ds.push_back(std::make_unique<Deadline>(io.get_executor()));
    ds.back()->bind([&order, i] { order.push_back(i); });
    ds.back()->expires_after(std::chrono::milliseconds(delays[i]));
  }
  io.run();
  EXPECT_EQ(order, (std::vector<int>{6, 1, 3, 5, 2, 4, 0, 7}));
  for (auto& d : ds)
    EXPECT_TRUE(d->expired());
}

TEST(Deadline, ADeadlineMovedLaterFiresAtTheLaterTime) {
  asio::io_context io;
  Deadline d(io.get_executor());
  Clock::time_point fired_at{};
  d.bind([&] { fired_at = Clock::now(); });
  const auto start = Clock::now();
  d.expires_after(10ms);
  d.expires_after(60ms);  // lazy: the queue entry stays at 10 ms and is pushed back when due
  io.run();
  EXPECT_TRUE(d.expired());
  EXPECT_GE(fired_at - start, 60ms);
}

TEST(Deadline, ADeadlineMovedEarlierFiresAtTheEarlierTime) {
  asio::io_context io;
  Deadline d(io.get_executor());
  Clock::time_point fired_at{};
  d.bind([&] { fired_at = Clock::now(); });
  const auto start = Clock::now();
  d.expires_after(10s);
  d.expires_after(10ms);
  io.run();  // returns once nothing is pending: the 10 s wait must have been replaced
  EXPECT_TRUE(d.expired());
  EXPECT_LT(fired_at - start, 5s);
}

TEST(Deadline, ClearedOrCancelledItNeverFires) {
  asio::io_context io;
  int fired = 0;
  Deadline cleared(io.get_executor());
  Deadline cancelled(io.get_executor());
  Deadline kept(io.get_executor());
  for (Deadline* d : {&cleared, &cancelled, &kept})
    d->bind([&] { ++fired; });
  cleared.expires_after(5ms);
  cancelled.expires_after(5ms);
  kept.expires_after(10ms);
  cleared.clear();
  cancelled.cancel();
  io.run();
  EXPECT_EQ(fired, 1);
  EXPECT_FALSE(cleared.expired());
  EXPECT_FALSE(cancelled.expired());
  EXPECT_TRUE(kept.expired());
}

// The queue's timer and another completion land in one reactor pass; the other runs first and
// destroys the deadline. The queue must find it gone (ASan reports a use-after-free if not).
TEST(Deadline, DestroyedWhileItsExpiryIsDueItNeverRuns) {
  asio::io_context io;
  int fired = 0;
  auto d = std::make_unique<Deadline>(io.get_executor());
  d->bind([&] { ++fired; });
  d->expires_after(1ms);
  asio::steady_timer other(io);
  other.expires_after(0ms);
  other.async_wait([&](const boost::system::error_code&) { d.reset(); });
  std::this_thread::sleep_for(10ms);
  io.run();
  EXPECT_EQ(d, nullptr);
  EXPECT_EQ(fired, 0);
}

// A callback may cancel and re-arm deadlines, its own included, while the queue is firing.
TEST(Deadline, CallbacksMayRearmAndCancelOthers) {
  asio::io_context io;
  Deadline a(io.get_executor());
  Deadline b(io.get_executor());
  Deadline c(io.get_executor());
  int a_fired = 0;
  int b_fired = 0;
  int c_fired = 0;
  a.bind([&] {
    if (++a_fired == 1) a.expires_after(5ms);  // once more
    b.cancel();
  });
  b.bind([&] { ++b_fired; });
  c.bind([&] { ++c_fired; });
  a.expires_after(1ms);
  b.expires_after(1ms);
  c.expires_after(1ms);
  std::this_thread::sleep_for(5ms);  // all three due in one pass
  io.run();
  EXPECT_EQ(a_fired, 2);
  EXPECT_LE(b_fired, 1);  // before or after a in the pass, never after a cancelled it
  EXPECT_EQ(c_fired, 1);
}

// The heap under churn: random arm, move, cancel and destroy, checked against the clock.
TEST(Deadline, RandomChurnFiresEachLiveDeadlineOnceAndNotEarly) {
  asio::io_context io;
  std::mt19937 rng(7);
  struct Entry {
    std::unique_ptr<Deadline> d;
    Clock::time_point due = Clock::time_point::max();
    int fired = 0;
    bool early = false;
  };
  std::vector<Entry> es(300);
  for (auto& e : es) {
    e.d = std::make_unique<Deadline>(io.get_executor());
    e.d->bind([&e] {
      ++e.fired;
      if (Clock::now() < e.due) e.early = true;
    });
  }
  for (int round = 0; round < 2000; ++round) {
    auto& e = es[rng() % es.size()];
    switch (rng() % 4) {
      case 0:
      case 1: {
        const auto at = Clock::now() + std::chrono::milliseconds(rng() % 40);
        e.due = at;
        e.fired = 0;
        e.d->expires_at(at);
        break;
      }
      case 2:
        e.due = Clock::time_point::max();
        e.d->cancel();
        break;
      default:
        e.due = Clock::time_point::max();
        e.d = std::make_unique<Deadline>(io.get_executor());
        e.d->bind([&e] {
          ++e.fired;
          if (Clock::now() < e.due) e.early = true;
        });
        break;
    }
  }
  io.run();
  for (const auto& e : es) {
    EXPECT_FALSE(e.early);
    EXPECT_EQ(e.fired, e.due == Clock::time_point::max() ? 0 : 1);
  }
}

// Two io_contexts on one thread, one after the other at possibly the same address: each
// deadline uses its own context's queue.
TEST(Deadline, EachContextHasItsOwnQueue) {
  for (int i = 0; i < 3; ++i) {
    auto io = std::make_unique<asio::io_context>();
    int fired = 0;
    {
      Deadline d(io->get_executor());
      d.bind([&] { ++fired; });
      d.expires_after(1ms);
      io->run();
    }
    EXPECT_EQ(fired, 1);
  }
}

}  // namespace
}  // namespace turnpike::support
