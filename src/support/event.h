// A one-waiter event for coroutines: wait() suspends until notify(), without a timer (a timer
// wait costs a timer-queue insertion and a cancel under the reactor's lock). The waiter is
// resumed through the executor, never inline from notify(). Owning worker thread only.
#pragma once

#include <utility>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace turnpike::support {

class Event {
 public:
  explicit Event(boost::asio::any_io_executor ex) : ex_(std::move(ex)) {}
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  /// Suspends until notify(). One waiter at a time.
  boost::asio::awaitable<void> wait() {
    co_await boost::asio::async_initiate<decltype(boost::asio::use_awaitable), void()>(
        [this](auto handler) {
          // Swapped in, not assigned: Boost 1.81's move assignment copies through the wrapping
          // constructor, which wraps the handler in itself, recursively.
          Handler h(std::move(handler));
          handler_.swap(h);
        },
        boost::asio::use_awaitable);
  }

  bool waiting() const noexcept { return static_cast<bool>(handler_); }

  /// Resumes the waiter, if any (later, on the executor).
  void notify() {
    if (!handler_) return;
    // Moved into a lambda (the move constructor is sound; see wait()).
    boost::asio::post(ex_, [h = Handler(std::move(handler_))]() mutable { std::move(h)(); });
  }

 private:
  using Handler = boost::asio::any_completion_handler<void()>;
  boost::asio::any_io_executor ex_;
  Handler handler_;
};

}  // namespace turnpike::support
