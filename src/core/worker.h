// A worker: one thread, one io_context, its own listening sockets (SO_REUSEPORT), its own
// upstream pools and its own view of the current snapshot. Public methods other than the
// constructor may be called from the control thread; they post into the worker.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "turnpike/config/config.h"
#include "turnpike/core/snapshot.h"

namespace turnpike::observability {
class AccessLogSink;
}

namespace turnpike::core {

class Worker {
 public:
  Worker(unsigned index, SnapshotPtr snapshot, observability::AccessLogSink* log);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  /// Before start(): a bound, listening socket (ownership passes to the worker) for `listener`.
  void add_listener(const config::Listener& listener, int fd, std::uint32_t max_connections);
  void start();
  /// Installs a new snapshot: the worker's next requests use it; requests in flight finish on
  /// the one they pinned.
  void set_snapshot(SnapshotPtr snapshot);
  /// Stop accepting; close idle connections now and busy ones after their current response.
  void begin_drain();
  /// Close everything and stop the loop.
  void stop();
  void join();
  /// Downstream connections still open (any thread).
  std::size_t live_connections() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace turnpike::core
