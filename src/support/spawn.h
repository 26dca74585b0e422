// Completion handlers for asio::co_spawn, used instead of asio::detached, which drops the
// exception that ends a coroutine: a worker could stop accepting, or a connection stop writing,
// without a log line. tests/lint/no_detached.py keeps asio::detached out of src/.
//
//   co_spawn(ex, session(std::move(socket)), support::log_exception("admin session"));
//   co_spawn(ex, write_loop(), support::log_exception("h2 writer", [w = weak_from_this()] {
//     if (auto c = w.lock()) c->abort();  // close what the coroutine served
//   }));
//   support::spawn_restarting(ex, "accept loop", kBackoff, [=] { return accept_loop(l); },
//                             [=] { return !l->removed; });
//
// Included only by the .cpp files that spawn coroutines (it brings in Asio's co_spawn).
#pragma once

#include <chrono>
#include <exception>
#include <string>
#include <utility>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace turnpike::support {

/// The message of the exception `e` holds (valid while `e` is).
inline const char* exception_message(const std::exception_ptr& e) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

/// A co_spawn completion handler: a coroutine that ends by an exception is logged with its name
/// and then `on_failure` runs (close what it served, wake who waits for it); a normal end is
/// quiet. Results of an awaitable<T> are ignored.
template <class OnFailure>
class LogException {
 public:
  LogException(const char* name, OnFailure on_failure)
      : name_(name), on_failure_(std::move(on_failure)) {}

  template <class... Results>
  void operator()(std::exception_ptr e, Results&&...) noexcept {
    if (!e) return;
    spdlog::error("{}: ended by an exception: {}", name_, exception_message(e));
    on_failure_();
  }

 private:
  const char* name_;
  OnFailure on_failure_;
};

struct NoFailureAction {
  void operator()() const noexcept {}
};

/// `name`: a string literal (kept as a pointer; spawning costs no allocation).
inline LogException<NoFailureAction> log_exception(const char* name) {
  return {name, NoFailureAction{}};
}

/// `on_failure` runs on the coroutine's executor after the coroutine's frame is gone: it may
/// only touch what outlives the coroutine (hold a weak_ptr to the object it served).
template <class OnFailure>
LogException<OnFailure> log_exception(const char* name, OnFailure on_failure) {
  return {name, std::move(on_failure)};
}

namespace detail {

template <class Make, class KeepGoing>
boost::asio::awaitable<void> run_restarting(std::string name, std::chrono::milliseconds backoff,
                                            Make make, KeepGoing keep_going) {
  for (;;) {
    std::exception_ptr failure;
    try {
      co_await make();
      co_return;
    } catch (...) {
      failure = std::current_exception();
    }
    spdlog::error("{}: ended by an exception: {}; restarting in {} ms", name,
                  exception_message(failure), backoff.count());
    failure = nullptr;
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, backoff);
    co_await timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    if (!keep_going()) {
      spdlog::info("{}: not restarted (no longer wanted)", name);
      co_return;
    }
    spdlog::warn("{}: restarted", name);
  }
}

}  // namespace detail

/// Runs the coroutine `make()` returns (an awaitable<void>) on `ex`. If it ends by an
/// exception, logs that, waits `backoff` and runs a fresh `make()` if `keep_going()` still says
/// so. A normal end is final. `make` and `keep_going` are kept (copied) for the restarts.
template <class Make, class KeepGoing>
void spawn_restarting(const boost::asio::any_io_executor& ex, std::string name,
                      std::chrono::milliseconds backoff, Make make, KeepGoing keep_going) {
  boost::asio::co_spawn(
      ex, detail::run_restarting(std::move(name), backoff, std::move(make), std::move(keep_going)),
      log_exception("restarting coroutine"));
}

}  // namespace turnpike::support
