// An immutable, runnable configuration: the validated config plus what was compiled from it
// (the route table, the filter chains, the TLS contexts): what a request runs against. Built
// from config structs on the control thread by core/ (reload), which publishes it to the
// workers. Built on the control thread, shared read-only by every worker; a request
// pins the snapshot it started with until it ends.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include <nlohmann/json.hpp>

#include "turnpike/config/config.h"
#include "turnpike/filters/filter.h"
#include "turnpike/router/route_table.h"
#include "upstream/endpoint_use.h"
#include "upstream/host_state.h"

namespace turnpike::tls {
class ServerContext;
class ClientContext;
}  // namespace turnpike::tls

namespace turnpike::proxy {

struct Snapshot {
  /// Builds everything the config compiles to; throws std::runtime_error when a part cannot be
  /// built (a TLS context whose files changed since they were checked, say).
  explicit Snapshot(config::Config&& cfg, std::uint64_t gen);
  /// The same config as `base` but for what its DNS clusters resolved to: `base`'s TLS contexts
  /// are shared (the files are not read again), everything else is built anew.
  Snapshot(config::Config&& cfg, std::uint64_t gen, const Snapshot& base);
  ~Snapshot();
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;

  const config::Config config;
  const router::RouteTable routes;  // points into `config`
  /// The filter chain each listener runs before routing, indexed like config.listeners, and
  /// the one each route runs, indexed like routes. Each configured instance is built once and
  /// shared by every chain that names it.
  std::vector<filters::FilterChain> listener_filters;
  std::vector<filters::FilterChain> route_filters;
  bool any_listener_filters = false;
  /// TLS termination per listener, indexed like config.listeners (null: cleartext).
  std::vector<std::shared_ptr<tls::ServerContext>> listener_tls;
  /// TLS to the backends per cluster, indexed like config.clusters (null: cleartext).
  std::vector<std::shared_ptr<tls::ClientContext>> cluster_tls;
  /// The endpoints' process-wide state per cluster (passive health), indexed like
  /// config.clusters; the same objects in every snapshot that keeps the cluster's endpoint.
  std::vector<upstream::ClusterHosts> cluster_hosts;

  /// GET /clusters: each cluster's policy and its endpoints' state as the process sees it now.
  /// `use`: what each worker reported of each endpoint (upstream/endpoint_use.h), summed here.
  nlohmann::json clusters_json(const std::vector<upstream::EndpointUse>& use = {}) const;
  const std::uint64_t generation;
  const std::chrono::system_clock::time_point loaded_at;

 private:
  Snapshot(config::Config&& cfg, std::uint64_t gen, const Snapshot* base);
};

using SnapshotPtr = std::shared_ptr<const Snapshot>;

}  // namespace turnpike::proxy
