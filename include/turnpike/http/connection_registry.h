// Per-worker set of live downstream connections, for drain and for counting. Codecs register
// their connections; core/ asks the registry to drain. Owning worker thread only, except
// live_count(), which the control thread may read (single writer, relaxed atomic).
#pragma once

#include <atomic>
#include <cstddef>
#include <unordered_set>
#include <vector>

namespace turnpike::http {

class ManagedConnection {
 public:
  /// Drain: close now if between requests, otherwise after the current response.
  virtual void shutdown_when_idle() noexcept = 0;
  /// Hard stop: close the socket now, whatever is in flight.
  virtual void abort() noexcept = 0;

 protected:
  ~ManagedConnection() = default;
};

class ConnectionRegistry {
 public:
  void add(ManagedConnection* c) {
    conns_.insert(c);
    live_.store(conns_.size(), std::memory_order_relaxed);
  }
  void remove(ManagedConnection* c) noexcept {
    conns_.erase(c);
    live_.store(conns_.size(), std::memory_order_relaxed);
  }
  std::size_t size() const noexcept { return conns_.size(); }
  std::size_t live_count() const noexcept { return live_.load(std::memory_order_relaxed); }
  bool draining() const noexcept { return draining_; }

  void start_drain() {
    draining_ = true;
    for (ManagedConnection* c : snapshot())
      c->shutdown_when_idle();
  }
  void abort_all() {
    for (ManagedConnection* c : snapshot())
      c->abort();
  }

 private:
  // Callbacks may remove connections; iterate over a copy.
  std::vector<ManagedConnection*> snapshot() const { return {conns_.begin(), conns_.end()}; }

  std::unordered_set<ManagedConnection*> conns_;
  std::atomic<std::size_t> live_{0};
  bool draining_ = false;
};

}  // namespace turnpike::http
