#include "proxy/snapshot.h"

#include <map>
#include <stdexcept>

#include "turnpike/filters/registry.h"

#include "tls/client_context.h"
#include "tls/server_context.h"

namespace turnpike::proxy {

Snapshot::Snapshot(config::Config&& cfg, std::uint64_t gen)
    : Snapshot(std::move(cfg), gen, nullptr) {}

Snapshot::Snapshot(config::Config&& cfg, std::uint64_t gen, const Snapshot& base)
    : Snapshot(std::move(cfg), gen, &base) {}

Snapshot::Snapshot(config::Config&& cfg, std::uint64_t gen, const Snapshot* base)
    : config(std::move(cfg)),
      routes(config),
      generation(gen),
      loaded_at(std::chrono::system_clock::now()) {
  if (base != nullptr && (base->config.listeners.size() != config.listeners.size() ||
                          base->config.clusters.size() != config.clusters.size()))
    base = nullptr;
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
    if (base != nullptr) {
      listener_tls[i] = base->listener_tls[i];
      continue;
    }
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
    if (base != nullptr) {
      cluster_tls[i] = base->cluster_tls[i];
      continue;
    }
    try {
      cluster_tls[i] = std::make_shared<tls::ClientContext>(*c.tls);
    } catch (const std::exception& e) {
      throw std::runtime_error("clusters[" + std::to_string(i) + "].tls ('" + c.name +
                               "'): " + e.what());
    }
  }
}

Snapshot::~Snapshot() = default;

nlohmann::json Snapshot::clusters_json(const std::vector<upstream::EndpointUse>& use) const {
  using Clock = std::chrono::steady_clock;
  const auto now = Clock::now();
  // The workers' reports, summed per endpoint.
  std::map<std::pair<std::string_view, std::string_view>, upstream::EndpointUse> sums;
  for (const auto& u : use) {
    upstream::EndpointUse& s = sums[{u.cluster, u.label}];
    s.active += u.active;
    s.open += u.open;
    s.idle += u.idle;
    s.requests += u.requests;
    s.failures += u.failures;
  }
  nlohmann::json out = nlohmann::json::array();
  for (std::size_t i = 0; i < config.clusters.size(); ++i) {
    const auto& c = config.clusters[i];
    const auto& hosts = cluster_hosts[i];
    nlohmann::json endpoints = nlohmann::json::array();
    std::size_t usable = 0;
    for (std::size_t k = 0; k < hosts.hosts.size(); ++k) {
      const upstream::HostState& h = *hosts.hosts[k];
      const auto until = upstream::ejected_until(h);
      const bool ejected = until != Clock::time_point::max() && until > now;
      const bool unhealthy = h.unhealthy.load(std::memory_order_relaxed);
      if (!ejected && !unhealthy) ++usable;
      // state: unhealthy (active checks fail) wins over ejected (passive).
      nlohmann::json e = {
          {"address", h.label},
          {"weight", c.endpoints[k].weight},
          {"state", unhealthy ? "unhealthy"
                    : ejected ? "ejected"
                              : "healthy"},
          {"consecutive_5xx", h.consecutive_5xx.load(std::memory_order_relaxed)},
          {"consecutive_gateway_failures",
           h.consecutive_gateway_failures.load(std::memory_order_relaxed)},
          {"ejections", h.ejections.load(std::memory_order_relaxed)},
      };
      if (auto it = sums.find({c.name, h.label}); it != sums.end()) {
        const upstream::EndpointUse& u = it->second;
        e["active_requests"] = u.active;
        e["connections"] = {{"open", u.open}, {"idle", u.idle}};
        e["requests"] = u.requests;
        e["failures"] = u.failures;
      }
      if (c.health_check.kind != config::HealthCheck::Kind::None)
        e["health_check"] = {
            {"healthy", !unhealthy},
            {"failures_in_a_row", h.check_failures.load(std::memory_order_relaxed)},
            {"checks", h.checks.load(std::memory_order_relaxed)},
        };
      if (ejected)
        e["ejected_for_ms"] =
            std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count();
      endpoints.push_back(std::move(e));
    }
    const bool panic =
        upstream::below_panic_threshold(usable, hosts.hosts.size(), c.panic_threshold);
    out.push_back({{"name", c.name},
                   {"lb_policy", c.lb_policy},
                   {"outlier_detection", c.outlier_detection.enabled},
                   {"panic_threshold", c.panic_threshold},
                   {"usable", usable},
                   {"panic", panic},
                   {"endpoints", std::move(endpoints)}});
  }
  return nlohmann::json{{"generation", generation}, {"clusters", std::move(out)}};
}

}  // namespace turnpike::proxy
