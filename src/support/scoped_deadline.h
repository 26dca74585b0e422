// A deadline for one stretch of a coroutine (a TLS handshake, reading a preface) that cannot
// outlive it: once it is disarmed or destroyed, the callback never runs, even when the queue's
// timer has already completed behind the I/O that ended the stretch (both in one reactor pass;
// Deadline takes itself out of its queue). Use it instead of a steady_timer whose handler
// captures a pointer into the coroutine's frame. Owning worker thread only.
#pragma once

#include <functional>
#include <utility>

#include "support/deadline.h"

namespace turnpike::support {

class ScopedDeadline {
 public:
  /// Runs `on_expire` (typically: close the socket the stretch reads from) once `timeout` has
  /// passed, unless disarm() or the destructor came first. Whatever `on_expire` refers to must
  /// outlive this object; the usual shape is a local declared after what it closes.
  ScopedDeadline(const boost::asio::any_io_executor& ex, Deadline::Clock::duration timeout,
                 std::function<void()> on_expire)
      : deadline_(ex) {
    deadline_.bind(std::move(on_expire));
    deadline_.expires_after(timeout);
  }

  ~ScopedDeadline() { disarm(); }

  ScopedDeadline(const ScopedDeadline&) = delete;
  ScopedDeadline& operator=(const ScopedDeadline&) = delete;

  /// From now on the callback does not run. Call it before handing what it guards to another
  /// owner (a socket moved into a connection object).
  void disarm() noexcept { deadline_.cancel(); }

  /// The callback ran: the stretch timed out (whatever the I/O reported).
  bool expired() const noexcept { return deadline_.expired(); }

 private:
  Deadline deadline_;
};

}  // namespace turnpike::support
