// Per-worker set of live downstream connections, for drain and for counting. Codecs register
// their connections; core/ asks the registry to drain. Owning worker thread only, except
// live_count(), which the control thread may read (single writer, relaxed atomic).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <unordered_map>
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
  /// `listener` identifies the listener the connection was accepted on.
  void add(ManagedConnection* c, std::uint64_t listener) {
    conns_.emplace(c, listener);
    ++per_listener_[listener];
    live_.store(conns_.size(), std::memory_order_relaxed);
  }
  void remove(ManagedConnection* c) noexcept {
    auto it = conns_.find(c);
    if (it == conns_.end()) return;
    auto pl = per_listener_.find(it->second);
    if (pl != per_listener_.end() && --pl->second == 0) per_listener_.erase(pl);
    conns_.erase(it);
    live_.store(conns_.size(), std::memory_order_relaxed);
  }
  std::size_t size() const noexcept { return conns_.size(); }
  /// Connections accepted on one listener.
  std::size_t size(std::uint64_t listener) const noexcept {
    auto it = per_listener_.find(listener);
    return it == per_listener_.end() ? 0 : it->second;
  }
  std::size_t live_count() const noexcept { return live_.load(std::memory_order_relaxed); }
  bool draining() const noexcept { return draining_; }

  void start_drain() {
    draining_ = true;
    for (ManagedConnection* c : snapshot())
      c->shutdown_when_idle();
  }
  /// Drains the connections of one listener (it was removed by a reload).
  void drain_listener(std::uint64_t listener) {
    for (ManagedConnection* c : snapshot(listener))
      c->shutdown_when_idle();
  }
  void abort_all() {
    for (ManagedConnection* c : snapshot())
      c->abort();
  }

 private:
  // Callbacks may remove connections; iterate over a copy.
  std::vector<ManagedConnection*> snapshot() const {
    std::vector<ManagedConnection*> out;
    out.reserve(conns_.size());
    for (const auto& [c, l] : conns_)
      out.push_back(c);
    return out;
  }
  std::vector<ManagedConnection*> snapshot(std::uint64_t listener) const {
    std::vector<ManagedConnection*> out;
    for (const auto& [c, l] : conns_)
      if (l == listener) out.push_back(c);
    return out;
  }

  std::unordered_map<ManagedConnection*, std::uint64_t> conns_;
  std::unordered_map<std::uint64_t, std::size_t> per_listener_;
  std::atomic<std::size_t> live_{0};
  bool draining_ = false;
};

}  // namespace turnpike::http
