#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "support/scoped_deadline.h"

namespace turnpike::support {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

// What a coroutine frame looks like to the deadline: the callback touches the owner's members.
struct Owner {
  Owner(asio::io_context& io, std::chrono::milliseconds timeout, int& fired)
      : deadline(io.get_executor(), timeout, [this, &fired] {
          ++hits;  // a use-after-free (ASan) if this ran once the owner is gone
          ++fired;
        }) {}
  int hits = 0;
  ScopedDeadline deadline;
};

TEST(ScopedDeadline, RunsTheCallbackOnExpiry) {
  asio::io_context io;
  int fired = 0;
  Owner owner(io, 5ms, fired);
  io.run();
  EXPECT_EQ(fired, 1);
  EXPECT_TRUE(owner.deadline.expired());
}

TEST(ScopedDeadline, DisarmedItNeverRuns) {
  asio::io_context io;
  int fired = 0;
  Owner owner(io, 5ms, fired);
  owner.deadline.disarm();
  io.run();
  EXPECT_EQ(fired, 0);
  EXPECT_FALSE(owner.deadline.expired());
}

// The accept path's bug: the I/O the deadline guards and the deadline's timer complete in one
// reactor pass; the I/O's handler runs first and ends the coroutine (the owner), then the
// timer's handler runs. Here a timer that expires just before the deadline plays the I/O.
TEST(ScopedDeadline, NeverRunsOnceItsOwnerIsGoneEvenWhenTheExpiryIsAlreadyQueued) {
  asio::io_context io;
  int fired = 0;
  asio::steady_timer io_done(io);
  io_done.expires_after(0ms);
  auto owner = std::make_unique<Owner>(io, 1ms, fired);
  io_done.async_wait([&](const boost::system::error_code&) { owner.reset(); });
  std::this_thread::sleep_for(10ms);  // both have expired before the loop first looks
  io.run();
  EXPECT_EQ(owner, nullptr);
  EXPECT_EQ(fired, 0);
}

// Why a guard is needed at all: cancel() cannot take back a completion already queued.
TEST(ScopedDeadline, CancelIsTooLateOnceTheExpiryIsQueued) {
  asio::io_context io;
  asio::steady_timer io_done(io);
  io_done.expires_after(0ms);
  asio::steady_timer plain(io);
  plain.expires_after(1ms);
  bool cancelled_first = false;
  boost::system::error_code plain_ec = asio::error::would_block;
  io_done.async_wait([&](const boost::system::error_code&) {
    plain.cancel();
    cancelled_first = true;
  });
  plain.async_wait([&](const boost::system::error_code& ec) { plain_ec = ec; });
  std::this_thread::sleep_for(10ms);
  io.run();
  EXPECT_TRUE(cancelled_first);
  EXPECT_FALSE(plain_ec) << "the timer's handler ran as if never cancelled: " << plain_ec;
}

TEST(ScopedDeadline, ExpiredStaysTrueAfterDisarm) {
  asio::io_context io;
  int fired = 0;
  Owner owner(io, 1ms, fired);
  io.run();
  owner.deadline.disarm();
  EXPECT_TRUE(owner.deadline.expired());
  EXPECT_EQ(fired, 1);
}

}  // namespace
}  // namespace turnpike::support
