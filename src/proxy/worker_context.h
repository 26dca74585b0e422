// Everything a worker's requests share: the worker's view of the current snapshot (with a
// non-atomic pin count, so pinning costs no cross-core traffic), its upstream pools, request
// ids, randomness, the access log buffer and buffers for bodies. Owning worker thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/intrusive/list.hpp>

#include "observability/access_log.h"
#include "proxy/snapshot.h"
#include "turnpike/http/connection_registry.h"
#include "upstream/cluster_pool.h"

namespace turnpike::proxy {

/// A request pinned to a snapshot, which the worker closes when its generation has to go (over
/// max_live_generations, or past generation_drain_timeout). Lives in the request's frame and
/// unlinks itself when the request ends.
class PinnedStream : public boost::intrusive::list_base_hook<
                         boost::intrusive::link_mode<boost::intrusive::auto_unlink>> {
 public:
  /// Ends the request now: the downstream stream is reset and any upstream exchange closed, so
  /// whatever the request is waiting on completes with an error.
  virtual void close_for_generation() noexcept = 0;
  /// Identifies the downstream connection (several streams may share one with HTTP/2).
  virtual const void* connection_id() const noexcept = 0;

 protected:
  ~PinnedStream() = default;
};

using PinnedStreams =
    boost::intrusive::list<PinnedStream, boost::intrusive::constant_time_size<false>>;

/// A snapshot as one worker sees it: the shared immutable snapshot plus this worker's pools for
/// its clusters (indexed like Config::clusters). Freed when the worker moved on and no request
/// pins it any more (the shared snapshot itself is freed by the control thread, which keeps a
/// reference to every live generation).
struct WorkerSnapshot {
  SnapshotPtr shared;
  std::vector<upstream::ClusterPool*> pools;
  std::uint32_t pins = 0;
  bool current = false;
  PinnedStreams streams;  // the pinned requests that registered to be closable
};

/// Requests and connections one worker has pinned to one generation.
struct GenerationUse {
  std::uint64_t generation = 0;
  std::uint32_t requests = 0;
  std::uint32_t connections = 0;
};

class WorkerContext;

/// Pins a WorkerSnapshot for the duration of a request. Move-only; owning worker only.
class SnapshotRef {
 public:
  SnapshotRef() = default;
  SnapshotRef(WorkerSnapshot* ws, WorkerContext* ctx) noexcept : ws_(ws), ctx_(ctx) { ++ws_->pins; }
  SnapshotRef(SnapshotRef&& o) noexcept : ws_(std::exchange(o.ws_, nullptr)), ctx_(o.ctx_) {}
  SnapshotRef& operator=(SnapshotRef&&) = delete;
  ~SnapshotRef();
  const Snapshot& operator*() const noexcept { return *ws_->shared; }
  const Snapshot* operator->() const noexcept { return ws_->shared.get(); }
  upstream::ClusterPool& pool(std::uint32_t cluster_index) const noexcept {
    return *ws_->pools[cluster_index];
  }
  /// Registers `s` to be closed if this generation has to go; `s` unlinks itself when destroyed.
  void attach(PinnedStream& s) const noexcept { ws_->streams.push_back(s); }
  /// Another pin of the same snapshot (a task that outlives the request, like a mirror).
  SnapshotRef again() const noexcept { return SnapshotRef(ws_, ctx_); }

 private:
  WorkerSnapshot* ws_ = nullptr;
  WorkerContext* ctx_ = nullptr;
};

/// Small per-worker free list of body buffers.
class BufferPool {
 public:
  static constexpr std::size_t kSize = 32 * 1024;
  std::unique_ptr<char[]> get() {
    if (free_.empty()) return std::make_unique_for_overwrite<char[]>(kSize);
    auto b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  void put(std::unique_ptr<char[]> b) {
    if (b && free_.size() < 256) free_.push_back(std::move(b));
  }

 private:
  std::vector<std::unique_ptr<char[]>> free_;
};

class WorkerContext {
 public:
  /// `workers`: how many workers the process has (they share the clusters' limits).
  WorkerContext(boost::asio::any_io_executor ex, unsigned index,
                observability::AccessLogSink* log_sink, unsigned workers = 1);
  ~WorkerContext();

  /// Installs `snap` as current: pools of clusters with the same name and definition are kept.
  void set_snapshot(SnapshotPtr snap);
  SnapshotRef pin() noexcept { return SnapshotRef(current_, this); }
  const Snapshot& current() const noexcept { return *current_->shared; }

  /// A new request id (UUID v4 format), unique per process with overwhelming probability.
  /// Writes kRequestIdSize characters (no heap: this runs once per request).
  void next_request_id(char* out) noexcept;
  static constexpr std::size_t kRequestIdSize = 36;
  std::uint32_t random() noexcept { return static_cast<std::uint32_t>(rng_()); }

  boost::asio::any_io_executor executor() const { return ex_; }
  observability::AccessLogBuffer& access_log() noexcept { return log_; }
  http::ConnectionRegistry& registry() noexcept { return registry_; }
  BufferPool& buffers() noexcept { return buffers_; }
  unsigned index() const noexcept { return index_; }

  /// Periodic housekeeping: idle upstream connections, access log hand-off, generation use.
  void sweep();
  void close_idle_upstreams();

  /// Closes the requests pinned to `generations` (never the current one). Returns how many.
  std::size_t close_generations(const std::vector<std::uint64_t>& generations);
  /// What sweep() last published: per live generation, the requests and connections pinned to
  /// it. Any thread (it takes a mutex that only sweep() and readers take, never a request).
  std::vector<GenerationUse> generation_use() const;
  /// What sweep() last published (at most a second old): each endpoint of the current
  /// snapshot's clusters as this worker uses it. Any thread (a mutex only sweep() and readers
  /// take).
  std::vector<upstream::EndpointUse> endpoint_use() const;

 private:
  friend class SnapshotRef;
  void unpinned(WorkerSnapshot* ws) noexcept;
  void collect_retired() noexcept;
  void publish_generation_use();

  boost::asio::any_io_executor ex_;
  unsigned index_;
  unsigned workers_;
  WorkerSnapshot* current_ = nullptr;
  std::vector<std::unique_ptr<WorkerSnapshot>> live_;
  // Pools by cluster name; the key includes a digest of the definition so a changed cluster
  // gets fresh pools.
  std::unordered_map<std::string, std::unique_ptr<upstream::ClusterPool>> pools_;
  std::vector<std::unique_ptr<upstream::ClusterPool>> retired_;  // still used by older snapshots
  std::mt19937_64 rng_;
  observability::AccessLogBuffer log_;
  http::ConnectionRegistry registry_;
  BufferPool buffers_;
  mutable std::mutex use_mutex_;
  std::vector<GenerationUse> use_;                   // guarded by use_mutex_
  std::vector<upstream::EndpointUse> endpoint_use_;  // guarded by use_mutex_
  unsigned sweeps_ = 0;
  void publish_endpoint_use();
};

}  // namespace turnpike::proxy
