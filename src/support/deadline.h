// A lazy per-connection deadline: one steady_timer that is re-armed only when it fires early
// or when a deadline moves earlier, so setting a deadline before each I/O operation costs a
// clock read and a store, not a timer-queue operation. On expiry it runs a callback (usually
// socket.cancel()); the pending operation then fails with operation_aborted and expired()
// tells it that was a timeout. Owning worker thread only.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include <boost/asio/steady_timer.hpp>

namespace turnpike::support {

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Deadline(const boost::asio::any_io_executor& ex) : timer_(ex) {}

  /// `owner` guards the callback: once it has expired, the callback is never run.
  void bind(std::weak_ptr<void> owner, std::function<void()> on_expire) {
    owner_ = std::move(owner);
    on_expire_ = std::move(on_expire);
  }

  /// Sets the deadline `d` from now and clears the expired flag.
  void expires_after(Clock::duration d) { expires_at(Clock::now() + d); }

  void expires_at(Clock::time_point t) {
    deadline_ = t;
    expired_ = false;
    if (!armed_ || t < armed_at_) arm();
  }

  /// No deadline until the next expires_*(); the timer stays armed and is ignored when it fires.
  void clear() noexcept { deadline_ = Clock::time_point::max(); }

  bool expired() const noexcept { return expired_; }

  /// Stops the timer for good (call from the owner's close path).
  void cancel() noexcept {
    deadline_ = Clock::time_point::max();
    timer_.cancel();
  }

 private:
  void arm() {
    armed_ = true;
    armed_at_ = deadline_;
    timer_.expires_at(deadline_);
    timer_.async_wait([this, owner = owner_](const boost::system::error_code& ec) {
      auto alive = owner.lock();
      if (!alive) return;
      on_fire(ec);
    });
  }

  void on_fire(const boost::system::error_code& ec) {
    // A cancelled wait belongs to an arm() that superseded it, or to cancel().
    if (ec) return;
    if (timer_.expiry() != armed_at_) return;  // stale completion of a superseded wait
    armed_ = false;
    if (deadline_ == Clock::time_point::max()) return;
    if (Clock::now() >= deadline_) {
      expired_ = true;
      deadline_ = Clock::time_point::max();
      if (on_expire_) on_expire_();
    } else {
      arm();
    }
  }

  boost::asio::steady_timer timer_;
  std::weak_ptr<void> owner_;
  std::function<void()> on_expire_;
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point armed_at_{};
  bool armed_ = false;
  bool expired_ = false;
};

}  // namespace turnpike::support
