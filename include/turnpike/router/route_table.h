// The compiled route table: built once per config snapshot on the control thread, then
// matched by every worker concurrently (immutable, so no synchronization).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "turnpike/config/config.h"
#include "turnpike/http/header_map.h"

namespace turnpike::router {

/// What the router looks at. All views must outlive the match call.
struct RequestView {
  std::string_view method;
  std::string_view host;   // lower-cased, no port
  std::string_view path;   // normalized
  std::string_view query;  // raw
  const http::HeaderMap* headers = nullptr;
};

enum class ActionKind : std::uint8_t { Proxy, Redirect, Respond };

struct BackendChoice {
  std::uint32_t cluster_index = 0;      // index into Config::clusters
  std::uint32_t cumulative_weight = 0;  // running sum, for weighted picks
};

/// One compiled route. Points into the Config it was built from (which the snapshot owns).
struct Route {
  std::uint32_t index = 0;
  const config::Route* config = nullptr;
  ActionKind action = ActionKind::Proxy;
  std::vector<BackendChoice> backends;  // Proxy only
  std::uint32_t total_weight = 0;
  std::int64_t mirror_cluster = -1;  // routes[].mirror's cluster index; -1: none

  const std::string& name() const { return config->name; }
  /// Picks a backend cluster index given a uniform random number in [0, total_weight).
  std::uint32_t pick_cluster(std::uint32_t random) const noexcept;
  /// Path sent upstream after `rewrite.path_prefix` (or the request path unchanged).
  std::string rewritten_path(std::string_view path) const;
};

struct Explanation {
  const Route* matched = nullptr;
  struct Miss {
    std::string route;
    // The first condition that did not match, e.g. `path: "/admin" is not under prefix "/users"`.
    std::string reason;
    std::uint32_t index = 0;  // position of the route in the table
  };
  std::vector<Miss> misses;  // routes before the match (or all routes when none matched)
  nlohmann::json to_json(const RequestView& req) const;
};

class RouteTable {
 public:
  /// Compiles `config.routes`. `config` must outlive the table. Regexes have been validated by
  /// config loading already; an invalid one here throws std::invalid_argument.
  explicit RouteTable(const config::Config& config);
  ~RouteTable();
  RouteTable(RouteTable&&) noexcept;
  RouteTable& operator=(RouteTable&&) noexcept;

  /// First matching route in declared order, or nullptr. Any thread; never allocates.
  const Route* match(const RequestView& req) const noexcept;
  /// Like match(), recording for each earlier route why it did not match.
  Explanation explain(const RequestView& req) const;
  /// The explain answer (JSON) for a request as a client would send it: the target is
  /// normalized and the host lower-cased as the codecs do. Shared by the admin's GET /explain
  /// and `turnpike explain`. On a target that cannot be normalized: null and `error` set.
  nlohmann::json explain(std::string_view method, std::string_view authority,
                         std::string_view target,
                         const std::vector<std::pair<std::string, std::string>>& headers,
                         std::string& error) const;

  const std::vector<Route>& routes() const noexcept { return routes_; }

 private:
  struct Compiled;
  std::vector<Route> routes_;
  std::unique_ptr<Compiled> compiled_;
};

}  // namespace turnpike::router
