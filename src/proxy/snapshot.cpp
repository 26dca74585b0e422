#include "proxy/snapshot.h"

#include <map>
#include <stdexcept>

#include "turnpike/filters/registry.h"

#include "tls/client_context.h"
#include "tls/server_context.h"

namespace turnpike::proxy {

Snapshot::Snapshot(config::Config&& cfg, std::uint64_t gen)
    : config(std::move(cfg)),
      routes(config),
      generation(gen),
      loaded_at(std::chrono::system_clock::now()) {
  // Only instances some chain names are built (an unused one costs nothing).
  std::map<std::string, std::shared_ptr<const filters::FilterConfig>, std::less<>> built;
  auto chain_of = [&](const std::vector<std::string>& names) {
    filters::FilterChain chain;
    for (const auto& name : names) {
      auto it = built.find(name);
      if (it == built.end()) {
        const config::FilterInstance* fi = config.find_filter(name);
        if (fi == nullptr) throw std::runtime_error("unknown filter '" + name + "'");
        it = built.emplace(name, filters::build_filter(config, *fi)).first;
      }
      chain.add(it->second);
    }
    return chain;
  };
  for (const auto& l : config.listeners) {
    listener_filters.push_back(chain_of(l.filters));
    any_listener_filters = any_listener_filters || !l.filters.empty();
  }
  for (const auto& r : config.routes)
    route_filters.push_back(chain_of(r.filters));
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
  for (const auto& c : config.clusters)
    cluster_hosts.push_back(upstream::hosts_for(c));
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

}  // namespace turnpike::proxy
