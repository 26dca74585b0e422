#include "turnpike/core/snapshot.h"

#include <stdexcept>

#include "tls/client_context.h"
#include "tls/server_context.h"

namespace turnpike::core {

Snapshot::Snapshot(config::Config&& cfg, std::uint64_t gen)
    : config(std::move(cfg)),
      routes(config),
      route_filters(config.routes.size()),
      generation(gen),
      loaded_at(std::chrono::system_clock::now()) {
  listener_tls.resize(config.listeners.size());
  for (std::size_t i = 0; i < config.listeners.size(); ++i) {
    const auto& l = config.listeners[i];
    if (!l.tls) continue;
    try {
      listener_tls[i] = std::make_shared<tls::ServerContext>(*l.tls, l.http1, l.h2);
    } catch (const std::exception& e) {
      throw std::runtime_error("listeners[" + std::to_string(i) + "].tls ('" + l.name +
                               "'): " + e.what());
    }
  }
  cluster_tls.resize(config.clusters.size());
  for (std::size_t i = 0; i < config.clusters.size(); ++i) {
    const auto& c = config.clusters[i];
    if (!c.tls) continue;
    try {
      cluster_tls[i] = std::make_shared<tls::ClientContext>(*c.tls);
    } catch (const std::exception& e) {
      throw std::runtime_error("clusters[" + std::to_string(i) + "].tls ('" + c.name +
                               "'): " + e.what());
    }
  }
}

Snapshot::~Snapshot() = default;

}  // namespace turnpike::core
