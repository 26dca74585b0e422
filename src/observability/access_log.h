// Access log: one JSON line per request. Workers format lines into their own buffer (no lock,
// no I/O) and hand full buffers to one writer thread, which is the only one that touches the
// file. The hand-off queue is bounded; when the writer falls behind, batches are dropped and
// counted rather than blocking a worker.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace turnpike::observability {

struct AccessRecord {
  std::string_view request_id;
  std::string_view client;
  std::string_view method;
  std::string_view path;
  std::string_view route;
  std::string_view cluster;
  std::string_view upstream;
  std::string_view consumer;  // the authenticated consumer, or empty
  int status = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  double duration_ms = 0;
  double upstream_ms = -1;              // negative: no upstream was involved
  std::uint32_t upstream_attempts = 0;  // tries sent to an endpoint (a retry makes it 2)
  /// What went wrong per failed try, one "endpoint: what" per line (empty: nothing).
  std::string_view upstream_failures;
  /// Why the answer is what it is, when Turnpike made it so: upstream_connect_failure,
  /// upstream_timeout, upstream_reset, upstream_protocol_error, downstream_disconnect (empty:
  /// the backend's own answer, or a local reply).
  std::string_view response_reason;
  /// routes[].mirror: "sent" (a copy went to the mirror cluster), "skipped" (the body was not
  /// held whole, or the percent draw said no); empty: the route has no mirror.
  std::string_view mirror;
  /// routes[].request_buffering: request body bytes read before the upstream was picked
  /// (negative: the route does not buffer, or the request had no body).
  std::int64_t request_buffered = -1;
};

/// The writer thread. Any thread may submit. A failed write (EPIPE, ENOSPC) drops its batch,
/// counted in dropped_batches() and logged once per streak of failures.
class AccessLogSink {
 public:
  /// `path`: "stdout", "stderr" or a file (appended). Returns nullptr and sets `error` on failure.
  static std::unique_ptr<AccessLogSink> open(const std::string& path, std::string& error);
  ~AccessLogSink();

  /// Queues a batch of complete lines. Per batch (not per request): takes a mutex briefly.
  void submit(std::string&& batch) noexcept;
  /// Blocks until everything queued so far is written (shutdown, tests).
  void flush();
  std::uint64_t dropped_batches() const noexcept {
    return dropped_.load(std::memory_order_relaxed);
  }

 private:
  AccessLogSink(std::FILE* f, bool owned);
  void run();
  void write_batch(const std::string& batch) noexcept;  // writer thread only

  std::FILE* file_;
  bool owned_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_;
  std::deque<std::string> queue_;
  std::size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool stop_ = false;
  bool failing_ = false;  // the last write failed (writer thread only)
  std::atomic<std::uint64_t> dropped_{0};
  std::thread thread_;
};

/// Per-worker line buffer. Owning worker thread only.
class AccessLogBuffer {
 public:
  explicit AccessLogBuffer(AccessLogSink* sink) : sink_(sink) {}
  bool enabled() const noexcept { return sink_ != nullptr; }
  void append(const AccessRecord& r);
  /// Hands the buffered lines to the sink (call periodically and at shutdown).
  void flush();

 private:
  AccessLogSink* sink_;
  std::string buf_;
};

}  // namespace turnpike::observability
