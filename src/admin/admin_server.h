// The admin listener: a small HTTP/1.1 server on the control thread's io_context, separate
// from traffic. GET /ready, /config, /config/status, /config/generations, /explain, /listeners;
// POST /reload[?dry_run=1]. Control thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <nlohmann/json.hpp>

#include "turnpike/config/config.h"
#include "turnpike/router/route_table.h"

namespace turnpike::admin {

/// What the admin endpoints read of the current generation. `pin` keeps what the pointers
/// point into alive.
struct GenerationView {
  std::shared_ptr<const void> pin;
  const config::Config* config = nullptr;
  const router::RouteTable* routes = nullptr;
  std::uint64_t generation = 0;
  std::chrono::system_clock::time_point loaded_at;
};

/// The daemon's side of the admin endpoints (core/ provides them; admin/ knows nothing of it).
struct AdminHooks {
  std::function<bool()> ready;
  std::function<GenerationView()> snapshot;
  std::function<nlohmann::json()> listeners;
  /// Reloads the config file now; returns the reload status (GET /config/status's answer).
  std::function<nlohmann::json(const std::string& trigger)> reload;
  std::function<nlohmann::json()> status;
  /// Validates a candidate (YAML text, or the config file when empty) and describes the changes.
  std::function<nlohmann::json(const std::string& yaml)> dry_run;
  /// GET /config/generations: the live generations and what is pinned to each.
  std::function<nlohmann::json()> generations;
  /// GET /clusters: every cluster's endpoints and their state (passive health).
  std::function<nlohmann::json()> clusters;
};

class AdminServer {
 public:
  AdminServer(boost::asio::io_context& io, AdminHooks hooks);
  ~AdminServer();
  /// Binds and starts accepting. Returns an error message, empty on success.
  std::string start(const std::string& address, std::uint16_t port);
  void stop();
  std::uint16_t port() const noexcept;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace turnpike::admin
