// Per-worker view of the upstream clusters: endpoint choice (the cluster's lb_policy,
// upstream/load_balancer.h), active requests per endpoint, connection set-up (upstream/connector.h)
// and keep-alive connection pools (bounded idle list per endpoint, idle timeout). Nothing here is
// shared with other workers, so nothing is locked. Owning worker thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "turnpike/config/config.h"
#include "turnpike/http/client_stream.h"
#include "upstream/endpoint_use.h"
#include "upstream/host_state.h"
#include "upstream/load_balancer.h"

namespace turnpike::http1 {
class ClientConnection;
}
namespace turnpike::http2 {
class ClientConnection;
}
namespace turnpike::tls {
class ClientContext;
}

namespace turnpike::upstream {

/// One endpoint's connections on this worker: how many are open (the codecs' objects alive),
/// and the requests waiting for one while max_connections is reached. Shared with each
/// connection's deleter, which may outlive the pool.
struct EndpointSlots {
  struct Waiter;
  std::uint32_t open = 0;
  std::deque<Waiter*> waiters;  // oldest first
  /// A connection was released (handed to the first waiter) or closed (the first waiter may
  /// open one). False: nobody waits.
  bool wake(std::shared_ptr<http1::ClientConnection> conn) noexcept;
};

struct EndpointState {
  boost::asio::ip::tcp::endpoint endpoint;
  std::string label;     // "127.0.0.1:9001" for logs
  std::string tls_name;  // with TLS: the name sent as SNI and verified
  std::int64_t weight = 1;
  std::size_t index = 0;  // in the cluster's endpoint list (and the balancer's hosts)
  std::vector<std::shared_ptr<http1::ClientConnection>> idle;
  std::vector<std::shared_ptr<http2::ClientConnection>> h2;  // multiplexed (protocol h2/h2c)
  std::shared_ptr<EndpointSlots> slots = std::make_shared<EndpointSlots>();
  std::uint64_t requests = 0;  // tries sent to it by this worker
  std::uint64_t failures = 0;  // tries that failed: connect failure, reset, timeout
};

/// A request's hold on its wait for a connection (at max_connections), so that a request that
/// ends meanwhile (its client left) leaves the queue at once instead of being handed a
/// connection it would not use. Owned by the request; owning worker only.
struct ConnectWait {
  void cancel() noexcept;
  bool cancelled = false;
  EndpointSlots* slots = nullptr;  // while queued
  void* waiter = nullptr;          // EndpointSlots::Waiter, while queued
};

/// Why a request was refused by the cluster's limits (clusters[].limits), or none.
enum class Overflow { None, MaxConnections, MaxPendingRequests, MaxRequests };
const char* overflow_name(Overflow o) noexcept;  // "max_connections"...

class ClusterPool {
 public:
  /// `tls`: the cluster's TLS client context (null: cleartext). `hosts`: the endpoints'
  /// process-wide state (upstream/host_state.h), index-aligned with cluster.endpoints; none:
  /// private state (tests, admin probes).
  /// `workers`: how many workers share the cluster's limits (each enforces its share).
  ClusterPool(const config::Cluster& cluster, boost::asio::any_io_executor ex,
              std::shared_ptr<tls::ClientContext> tls = nullptr, ClusterHosts hosts = {},
              unsigned workers = 1);

  const config::Cluster& config() const noexcept { return *config_; }
  /// Points the pool at an identical definition in a newer snapshot (the old one may be freed).
  void rebind(const config::Cluster& same_definition, std::shared_ptr<tls::ClientContext> tls,
              ClusterHosts hosts) noexcept;
  /// Takes over `before`'s pooled connections to the endpoints both have (same address and TLS
  /// name): `before` is the pool of the same cluster, with the same settings, in the previous
  /// snapshot, whose endpoint list changed (DNS discovery), so kept endpoints keep their
  /// warm connections. Connections to removed endpoints stay with `before` and drain there.
  void adopt(ClusterPool& before) noexcept;
  /// The endpoint for a request, by the cluster's lb_policy, among those not ejected (all of
  /// them below panic_threshold). Only when !none_usable() (there is at least one endpoint).
  /// `hash_key`: the request's hash_on key, hashed (ring_hash, maglev); none: the policy's fallback
  /// (random). `avoid`: a retry's previous endpoint, not chosen again when another is usable.
  EndpointState& pick(
      std::optional<std::uint64_t> hash_key = std::nullopt, const EndpointState* avoid = nullptr,
      std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now()) noexcept;
  /// What the request to `ep` came to (outlier detection). A success on an endpoint with
  /// nothing to reset costs one relaxed load.
  void report(const EndpointState& ep, Outcome outcome, std::string_view why) noexcept {
    if (outcome == Outcome::Success &&
        !hosts_.hosts[ep.index]->dirty.load(std::memory_order_relaxed))
      return;
    report_slow(ep, outcome, why);
  }
  /// A request is in flight on `ep` (least_request counts these), and no longer.
  void request_started(EndpointState& ep) noexcept {
    ++active_[ep.index];
    ++active_total_;
    ++ep.requests;
  }
  void request_ended(EndpointState& ep) noexcept {
    if (active_[ep.index] > 0) {
      --active_[ep.index];
      --active_total_;
    }
  }
  /// Room for one more request in flight (max_requests, this worker's share).
  bool admits_request() const noexcept { return active_total_ < max_requests_; }
  /// No endpoint usable at all (every one unhealthy or ejected, and panic_threshold 0; or a DNS
  /// cluster with no address yet): the request is answered "no healthy upstream".
  bool none_usable(std::chrono::steady_clock::time_point now) noexcept {
    refresh(now);
    return none_usable_;
  }
  /// A retry may start: below max_retries (this worker's share) and `budget` (the route's
  /// retry budget for the requests in flight now; see RetryState::budget). Null when it may
  /// (and it is counted: retry_ended() when it is over), else which cap refused it.
  const char* retry_started(std::uint32_t budget) noexcept {
    if (retries_ >= max_retries_) return "max_retries";
    if (retries_ >= budget) return "retry budget";
    ++retries_;
    return nullptr;
  }
  std::uint32_t active_requests() const noexcept { return active_total_; }
  void retry_ended() noexcept {
    if (retries_ > 0) --retries_;
  }
  std::size_t endpoint_count() const noexcept { return endpoints_.size(); }
  /// An exchange with `ep`. HTTP/1.1: a pooled connection that still looks alive, or a fresh
  /// one (connected). HTTP/2: a new stream on an open connection with room for it, or on a new
  /// connection (which may still be connecting). `reused` tells the caller whether a failure
  /// may be a stale keep-alive close. `probe`: check any pooled HTTP/1.1 connection for a
  /// close by the peer first (otherwise only those idle for a while), for requests that must
  /// not be sent twice.
  struct Lease {
    std::shared_ptr<http::ClientStream> conn;
    boost::system::error_code ec;
    bool reused = false;
    Overflow overflow = Overflow::None;  // refused by a limit (no conn, no ec)
  };
  boost::asio::awaitable<Lease> acquire(EndpointState& ep, bool allow_reuse = true,
                                        bool probe = false);
  /// acquire() in two steps, so that the usual case costs no coroutine frame: take() lends a
  /// pooled HTTP/1.1 connection or an HTTP/2 stream without I/O (null `conn`: none, connect());
  /// connect() opens a new HTTP/1.1 connection. At max_connections (this worker's share, with
  /// at least one connection of its own to the endpoint), connect() waits up to connect_timeout
  /// for one to be released or closed, in a queue bounded by max_pending_requests; with HTTP/2,
  /// when every connection is full, for a stream to end (or a connection to close), in the same
  /// queue. Refusals come back as `overflow`.
  Lease take(EndpointState& ep, bool allow_reuse, bool probe);
  /// `wait`: lets the caller cancel a wait in the queue (the lease then has
  /// operation_aborted); a connection handed over meanwhile goes to the next in line.
  boost::asio::awaitable<Lease> connect(EndpointState& ep, ConnectWait* wait = nullptr);
  /// Returns an exchange that completed. HTTP/1.1: the connection is pooled, or closed if not
  /// reusable or the pool is full; HTTP/2: the stream is released.
  void release(EndpointState& ep, std::shared_ptr<http::ClientStream> conn) noexcept;
  /// Closes idle connections unused for longer than the cluster's idle_timeout, and (at most once
  /// a second, so a large pool costs few system calls) those the backend has closed.
  void sweep(std::chrono::steady_clock::time_point now) noexcept;
  /// Closes every idle connection.
  void close_idle() noexcept;
  std::size_t idle_count() const noexcept;
  /// Appends each endpoint's use by this worker.
  void usage(std::vector<EndpointUse>& out) const;

 private:
  const config::Cluster* config_;
  boost::asio::any_io_executor ex_;
  std::shared_ptr<tls::ClientContext> tls_;
  std::vector<EndpointState> endpoints_;
  std::vector<std::uint32_t> active_;  // requests in flight per endpoint (this worker's)
  std::uint32_t active_total_ = 0;
  std::uint32_t pending_ = 0;  // requests waiting for a connection (max_connections)
  std::uint32_t retries_ = 0;  // retries in flight
  // This worker's shares of the cluster's limits.
  std::uint32_t max_connections_ = 0;
  std::uint32_t max_pending_ = 0;
  std::uint32_t max_requests_ = 0;
  std::uint32_t max_retries_ = 0;
  unsigned workers_ = 1;
  void set_limits() noexcept;
  boost::asio::awaitable<std::optional<Lease>> wait_turn(
      EndpointState& ep, std::chrono::steady_clock::time_point deadline, ConnectWait* wait);
  template <class Conn, class... Args>
  std::shared_ptr<Conn> make_connection(EndpointState& ep, Args&&... args);
  std::unique_ptr<LoadBalancer> lb_;
  // Which endpoints are usable, as this worker last saw the shared state: rebuilt when the
  // cluster's health version moves or the earliest ejection ends.
  void refresh(std::chrono::steady_clock::time_point now) noexcept {
    const auto version = hosts_.health->version.load(std::memory_order_relaxed);
    if (version != seen_version_ || now >= next_return_) refresh_slow(now, version);
  }
  void refresh_slow(std::chrono::steady_clock::time_point now, std::uint64_t version) noexcept;
  void report_slow(const EndpointState& ep, Outcome outcome, std::string_view why) noexcept;
  ClusterHosts hosts_;
  std::vector<std::uint8_t> usable_;
  std::uint64_t seen_version_ = ~std::uint64_t{0};
  std::chrono::steady_clock::time_point next_return_ = std::chrono::steady_clock::time_point::max();
  bool all_usable_ = true;
  bool none_usable_ = false;
  std::chrono::steady_clock::time_point last_probe_{};
  bool h2_ = false;
};

}  // namespace turnpike::upstream
