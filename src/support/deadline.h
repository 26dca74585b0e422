// A lazy deadline for one connection or one stretch of work, kept in a per-io_context queue
// (DeadlineQueue, deadline.cpp): an intrusive min-heap behind a single steady_timer. Setting a
// deadline before each I/O operation costs a clock read and a store when the deadline only moves
// later (the entry fires early and is pushed back to the real deadline); it costs a heap push
// when the deadline was not set, and nothing goes through Asio's timer queue, its mutex or its
// service registry per connection. On expiry the callback runs (usually socket.cancel()); the
// pending operation then fails with operation_aborted and expired() tells it that was a timeout.
//
// Lifetime: cancel() and the destructor take the entry out of the queue, so the callback never
// runs once either has returned, even when the queue's timer has already completed in the same
// reactor pass (the queue finds the entry gone). Owning thread only: the thread that runs the
// io_context of the executor it was made with.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>

#include <boost/asio/any_io_executor.hpp>

namespace turnpike::support {

class DeadlineQueue;

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Deadline(const boost::asio::any_io_executor& ex);
  ~Deadline();
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

  /// What runs when the deadline passes. It runs on the owning thread, from the queue's timer
  /// handler; it may cancel or re-arm any deadline, this one included, but must not destroy this
  /// one (close a socket and let the coroutine end the owner, as every caller does).
  void bind(std::function<void()> on_expire) { on_expire_ = std::move(on_expire); }

  /// Sets the deadline `d` from now and clears the expired flag.
  void expires_after(Clock::duration d) { expires_at(Clock::now() + d); }

  void expires_at(Clock::time_point t) {
    deadline_ = t;
    expired_ = false;
    if (slot_ == kNone || t < key_) schedule(t);
  }

  /// No deadline until the next expires_*(); the queue entry stays and is dropped when it fires.
  void clear() noexcept { deadline_ = Clock::time_point::max(); }

  bool expired() const noexcept { return expired_; }

  /// No deadline, and out of the queue now (the owner's close path).
  void cancel() noexcept {
    deadline_ = Clock::time_point::max();
    if (slot_ != kNone) unschedule();
  }

 private:
  friend class DeadlineQueue;
  static constexpr std::size_t kNone = static_cast<std::size_t>(-1);

  void schedule(Clock::time_point t);
  void unschedule() noexcept;
  void fire(Clock::time_point now);  // the queue popped this entry: expire it or push it back

  DeadlineQueue& queue_;
  std::function<void()> on_expire_;
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point key_{};   // when the queue entry fires (<= deadline_ while queued)
  std::size_t slot_ = kNone;  // index in the queue's heap
  bool expired_ = false;
};

}  // namespace turnpike::support
