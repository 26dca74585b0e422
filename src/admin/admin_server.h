// The admin listener: a small HTTP/1.1 server on the control thread's io_context, separate
// from traffic. GET /ready, /config, /config/status, /config/generations, /explain, /listeners;
// POST /reload[?dry_run=1]. Control thread only.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <nlohmann/json.hpp>

#include "turnpike/core/snapshot.h"

namespace turnpike::admin {

struct AdminHooks {
  std::function<bool()> ready;
  std::function<core::SnapshotPtr()> snapshot;
  std::function<nlohmann::json()> listeners;
  /// Reloads the config file now; returns the reload status (GET /config/status's answer).
  std::function<nlohmann::json(const std::string& trigger)> reload;
  std::function<nlohmann::json()> status;
  /// Validates a candidate (YAML text, or the config file when empty) and describes the changes.
  std::function<nlohmann::json(const std::string& yaml)> dry_run;
  /// GET /config/generations: the live generations and what is pinned to each.
  std::function<nlohmann::json()> generations;
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

/// The explain answer for a request, shared by GET /explain and `turnpike explain`.
nlohmann::json explain(const core::Snapshot& snap, std::string_view method,
                       std::string_view authority, std::string_view target,
                       const std::vector<std::pair<std::string, std::string>>& headers,
                       std::string& error);

}  // namespace turnpike::admin
