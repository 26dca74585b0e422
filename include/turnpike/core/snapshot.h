// An immutable, runnable configuration: the validated config plus what was compiled from it
// (the route table). Built on the control thread, shared read-only by every worker; a request
// pins the snapshot it started with until it ends.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "turnpike/config/config.h"
#include "turnpike/filters/filter.h"
#include "turnpike/router/route_table.h"

namespace turnpike::core {

struct Snapshot {
  explicit Snapshot(config::Config&& cfg, std::uint64_t gen)
      : config(std::move(cfg)),
        routes(config),
        route_filters(config.routes.size()),
        generation(gen),
        loaded_at(std::chrono::system_clock::now()) {}
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;

  const config::Config config;
  const router::RouteTable routes;  // points into `config`
  /// The filter chain each route runs, indexed like routes (empty until filter types exist).
  const std::vector<filters::FilterChain> route_filters;
  const std::uint64_t generation;
  const std::chrono::system_clock::time_point loaded_at;
};

using SnapshotPtr = std::shared_ptr<const Snapshot>;

}  // namespace turnpike::core
