// Active health checks (`clusters[].health_check`): one checker per process, on a thread of its
// own (never a worker, never the control thread, so a slow config load does not delay a check
// and a check never delays a request). Each endpoint of each cluster with a check gets one loop:
// check, wait interval (plus up to 10% jitter), check again. A check is a TCP connect (`tcp`), a
// GET answered with an expected status (`http`), or grpc.health.v1.Health/Check answered
// SERVING (`grpc`), over the cluster's own protocol and TLS, on a fresh connection, all within
// `timeout`.
//
// Results reach the workers without a lock: the checker writes HostState::unhealthy (an atomic)
// and bumps the cluster's health version; each worker's ClusterPool sees the version move on its
// next pick and rebuilds its usable set. Loops are keyed by cluster, endpoint and check
// definition, so a reload that keeps them keeps the loop and its counts; a changed check starts
// a new loop from the endpoint's current health; an endpoint whose check goes away is healthy. A
// kept loop takes the new snapshot's TLS context (certificate files may have changed).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "turnpike/config/config.h"
#include "upstream/host_state.h"

namespace turnpike::tls {
class ClientContext;
}

namespace turnpike::upstream {

/// One endpoint to check, as a snapshot defines it.
struct HealthTarget {
  std::string key;  // identity: cluster, endpoint, check, protocol, TLS
  std::string cluster;
  std::string label;  // "10.0.0.7:8080"
  boost::asio::ip::tcp::endpoint endpoint;
  std::string authority;  // Host / :authority of http and grpc checks
  std::string tls_name;
  bool h2 = false;  // the cluster speaks HTTP/2 (h2c, or h2 over TLS)
  config::HealthCheck check;
  config::ClusterHttp2 http2;
  std::shared_ptr<tls::ClientContext> tls;
  std::shared_ptr<HostState> host;
  std::shared_ptr<ClusterHealth> health;
};

/// The targets of `cluster` (none without a health_check). `hosts` index-aligned with its
/// endpoints; `tls`: the cluster's client context (null: cleartext).
std::vector<HealthTarget> health_targets(const config::Cluster& cluster, const ClusterHosts& hosts,
                                         const std::shared_ptr<tls::ClientContext>& tls);

/// One check of `t`, bounded by its timeout: empty when it passed, else why not ("connect:
/// Connection refused", "status 503 (expected 200-399)", "grpc NOT_SERVING"...). On the
/// calling coroutine's executor.
boost::asio::awaitable<std::string> check_once(const HealthTarget& t);

class HealthChecker {
 public:
  HealthChecker();   // starts the checker thread
  ~HealthChecker();  // stops every loop and joins the thread
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  /// The complete set of endpoints to check from now on (the snapshot in force). Any thread;
  /// applied on the checker thread.
  void update(std::vector<HealthTarget> targets);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace turnpike::upstream
