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

#include "core/generations.h"
#include "core/snapshot.h"
#include "turnpike/config/config.h"
#include "upstream/endpoint_use.h"

namespace turnpike::observability {
class AccessLogSink;
}

namespace turnpike::core {

class Worker {
 public:
  /// `workers`: how many workers share each listener (its max_connections is split evenly).
  Worker(unsigned index, unsigned workers, SnapshotPtr snapshot, observability::AccessLogSink* log);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  /// A bound, listening socket (ownership passes to the worker). `id` names the bound listener
  /// for as long as reloads keep it; its settings are looked up by `address`:`port` in the
  /// current snapshot.
  struct ListenerSocket {
    std::uint64_t id = 0;
    std::string address;
    std::uint16_t port = 0;  // the configured port (0: the kernel picked one)
    int fd = -1;
  };

  /// Before start().
  void add_listener(ListenerSocket socket);
  void start();
  /// Installs a new snapshot: the worker's next requests use it; requests in flight finish on
  /// the one they pinned. Listeners in `added` start accepting; those in `removed` stop
  /// accepting and their connections drain.
  void apply(SnapshotPtr snapshot, std::vector<ListenerSocket> added = {},
             std::vector<std::uint64_t> removed = {});
  /// Closes the requests pinned to these (superseded) generations.
  void close_generations(std::vector<std::uint64_t> generations);
  /// Requests and connections this worker has pinned per live generation (any thread; as of
  /// the worker's last housekeeping pass, at most 200 ms old).
  std::vector<GenerationUsage> generation_use() const;
  /// Each endpoint as this worker uses it (published about once a second). Any thread.
  std::vector<upstream::EndpointUse> endpoint_use() const;
  /// Stop accepting; close idle connections now and busy ones after their current response.
  void begin_drain();
  /// Close everything and stop the loop.
  void stop();
  void join();
  /// The generation this worker has installed as current (any thread).
  std::uint64_t generation() const noexcept;
  /// Downstream connections still open (any thread).
  std::size_t live_connections() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace turnpike::core
