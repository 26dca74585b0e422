// Everything a worker's requests share: the worker's view of the current snapshot (with a
// non-atomic pin count, so pinning costs no cross-core traffic), its upstream pools, request
// ids, randomness, the access log buffer and buffers for bodies. Owning worker thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "observability/access_log.h"
#include "turnpike/core/snapshot.h"
#include "turnpike/http/connection_registry.h"
#include "upstream/cluster_pool.h"

namespace turnpike::proxy {

/// A snapshot as one worker sees it: the shared immutable snapshot plus this worker's pools for
/// its clusters (indexed like Config::clusters). Freed when the worker moved on and no request
/// pins it any more.
struct WorkerSnapshot {
  core::SnapshotPtr shared;
  std::vector<upstream::ClusterPool*> pools;
  std::uint32_t pins = 0;
  bool current = false;
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
  const core::Snapshot& operator*() const noexcept { return *ws_->shared; }
  const core::Snapshot* operator->() const noexcept { return ws_->shared.get(); }
  upstream::ClusterPool& pool(std::uint32_t cluster_index) const noexcept {
    return *ws_->pools[cluster_index];
  }

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
  WorkerContext(boost::asio::any_io_executor ex, unsigned index,
                observability::AccessLogSink* log_sink);
  ~WorkerContext();

  /// Installs `snap` as current: pools of clusters with the same name and definition are kept.
  void set_snapshot(core::SnapshotPtr snap);
  SnapshotRef pin() noexcept { return SnapshotRef(current_, this); }
  const core::Snapshot& current() const noexcept { return *current_->shared; }

  /// A new request id (UUID v4 format), unique per process with overwhelming probability.
  std::string next_request_id();
  std::uint32_t random() noexcept { return static_cast<std::uint32_t>(rng_()); }

  boost::asio::any_io_executor executor() const { return ex_; }
  observability::AccessLogBuffer& access_log() noexcept { return log_; }
  http::ConnectionRegistry& registry() noexcept { return registry_; }
  BufferPool& buffers() noexcept { return buffers_; }
  unsigned index() const noexcept { return index_; }

  /// Periodic housekeeping: idle upstream connections, access log hand-off.
  void sweep();
  void close_idle_upstreams();

 private:
  friend class SnapshotRef;
  void unpinned(WorkerSnapshot* ws) noexcept;
  void collect_retired() noexcept;

  boost::asio::any_io_executor ex_;
  unsigned index_;
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
};

}  // namespace turnpike::proxy
