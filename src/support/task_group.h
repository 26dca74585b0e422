// Coroutines a parent coroutine spawns and must outlive: the parent co_awaits join() before it
// returns (before the group goes), so children may refer to its frame. A child's exception is
// logged with its name (never swallowed), and the group still counts it as finished. Owning worker
// thread only.
#pragma once

#include <exception>
#include <string_view>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace turnpike::support {

class TaskGroup {
 public:
  explicit TaskGroup(const boost::asio::any_io_executor& ex) : done_(ex) {}
  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;

  /// Starts `task` on the group's executor. `name` must outlive the task (a literal).
  void spawn(boost::asio::awaitable<void> task, std::string_view name) {
    ++running_;
    boost::asio::co_spawn(done_.get_executor(), std::move(task),
                          [this, name](const std::exception_ptr& e) {
                            if (e) log(e, name);
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
  static void log(const std::exception_ptr& e, std::string_view name) noexcept {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::error("{}: unexpected exception: {}", name, ex.what());
    } catch (...) {
      spdlog::error("{}: unexpected exception", name);
    }
  }

  boost::asio::steady_timer done_;
  std::size_t running_ = 0;
};

}  // namespace turnpike::support
