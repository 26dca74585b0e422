// Coroutines a parent coroutine spawns and must outlive: the parent co_awaits join() before it
// returns (before the group goes), so children may refer to its frame. A child that ends by an
// exception is logged with its name (never swallowed, as with support::log_exception), its
// `on_failure` runs, and the group counts it as finished. Owning worker thread only.
#pragma once

#include <cstddef>
#include <exception>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "support/spawn.h"

namespace turnpike::support {

class TaskGroup {
 public:
  explicit TaskGroup(const boost::asio::any_io_executor& ex) : done_(ex) {}
  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;

  /// Starts `task` on the group's executor. `name`: a string literal.
  void spawn(boost::asio::awaitable<void> task, const char* name) {
    spawn(std::move(task), name, NoFailureAction{});
  }
  /// `on_failure` runs after the child ended by an exception (wake whoever counts on it).
  template <class OnFailure>
  void spawn(boost::asio::awaitable<void> task, const char* name, OnFailure on_failure) {
    ++running_;
    boost::asio::co_spawn(
        done_.get_executor(), std::move(task),
        [this, name, on_failure = std::move(on_failure)](const std::exception_ptr& e) mutable {
          if (e) {
            spdlog::error("{}: ended by an exception: {}", name, exception_message(e));
            on_failure();
          }
          if (--running_ == 0) done_.cancel();
        });
  }

  std::size_t running() const noexcept { return running_; }

  /// Waits until every spawned task has finished.
  boost::asio::awaitable<void> join() {
    while (running_ > 0) {
      done_.expires_at(boost::asio::steady_timer::time_point::max());
      co_await done_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    }
  }

 private:
  boost::asio::steady_timer done_;
  std::size_t running_ = 0;
};

}  // namespace turnpike::support
