// What every worker of the process knows about one endpoint of one cluster: its passive health
// (outlier detection: failures in a row, ejection and until when). Workers read and write it
// with relaxed atomics and no lock; a successful answer reads the counters and writes only when
// one is not zero, so a healthy endpoint's cache line is shared, not bounced between cores.
//
// The registry hands out one HostState per (cluster name, endpoint address) for as long as any
// config snapshot uses it, so an ejected endpoint stays ejected across a reload that keeps it,
// and a removed and re-added one starts fresh. Looked up when a snapshot is built (control
// thread), never per request.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "turnpike/config/config.h"

namespace turnpike::upstream {

struct HostState {
  std::string cluster;
  std::string label;  // "127.0.0.1:9001"
  std::atomic<std::uint32_t> consecutive_5xx{0};
  std::atomic<std::uint32_t> consecutive_gateway_failures{0};
  std::atomic<std::int64_t> ejected_until{0};  // steady_clock ticks; 0: in balancing
  std::atomic<std::int64_t> last_ejected{0};   // when it was last taken out (steady ticks)
  std::atomic<std::uint32_t> times_ejected{0};
  std::atomic<std::uint64_t> ejections{0};  // in total, for /clusters and logs
  std::atomic<bool> refusal_logged{false};  // "not ejected (max_ejection_percent)": once
  // Active health checks (upstream/health_check.h): written by the checker thread only.
  std::atomic<bool> unhealthy{false};            // failed unhealthy_threshold checks in a row
  std::atomic<bool> checked{false};              // a health check runs for it
  std::atomic<std::uint32_t> check_failures{0};  // in a row
  std::atomic<std::uint64_t> checks{0};          // in total
  // Any of the above not at rest (a count above zero, a refusal logged): a success has
  // something to reset. One load on the request path when all is well.
  std::atomic<bool> dirty{false};
};

/// One per cluster name: a version bumped on every ejection and return, so that a worker
/// rebuilds its view of which endpoints are usable only when something changed (one relaxed
/// load per request otherwise).
struct ClusterHealth {
  std::atomic<std::uint64_t> version{0};
  std::atomic<bool> panicking{false};  // logged once per transition
};

/// The hosts of one cluster, index-aligned with config::Cluster::endpoints.
struct ClusterHosts {
  std::vector<std::shared_ptr<HostState>> hosts;
  std::shared_ptr<ClusterHealth> health;
};

/// Process-wide; used while building snapshots.
ClusterHosts hosts_for(const config::Cluster& cluster);

/// "10.0.0.7:8080" or "[::1]:8080": an endpoint's identity in logs, state and hashing.
std::string endpoint_label(const config::Endpoint& e);
/// The endpoint's host as written ("api.internal:443" -> "api.internal", "[::1]:80" -> "::1").
std::string endpoint_host(const config::Endpoint& e);
/// With TLS: the name sent as SNI and verified (tls.server_name, else the host as written).
std::string endpoint_tls_name(const config::Cluster& cluster, const config::Endpoint& e);

/// panic_threshold's rule: fewer than `threshold_percent` of `total` endpoints usable.
inline bool below_panic_threshold(std::size_t usable, std::size_t total,
                                  std::uint32_t threshold_percent) noexcept {
  return usable * 100 < std::size_t{threshold_percent} * total;
}

/// What an attempt on an endpoint came to, for outlier detection.
enum class Outcome {
  Success,         // a response head below 500
  Status5xx,       // a 5xx response head from the backend
  GatewayFailure,  // connect failure, reset or timeout: no answer
};

/// Records `outcome` of a request to `host` of `cluster` (index `index` in `hosts`); ejects
/// the host when a threshold is reached and the cluster allows another ejection. `why` names
/// the failure for the log line. Any worker.
void report(const config::Cluster& cluster, const ClusterHosts& hosts, std::size_t index,
            Outcome outcome, std::string_view why);

/// True while `host` is ejected. One that has served its time is put back here (and logged)
/// by whichever worker looks first.
bool is_ejected(HostState& host, ClusterHealth& health, std::chrono::steady_clock::time_point now);

/// When `host`'s ejection ends (steady_clock), or max() when it is in balancing.
std::chrono::steady_clock::time_point ejected_until(const HostState& host);

}  // namespace turnpike::upstream
