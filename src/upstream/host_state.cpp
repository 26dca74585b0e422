#include "upstream/host_state.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>

#include <spdlog/spdlog.h>

namespace turnpike::upstream {

namespace {

using Clock = std::chrono::steady_clock;

struct Registry {
  std::mutex mu;
  std::map<std::pair<std::string, std::string>, std::weak_ptr<HostState>> hosts;
  std::map<std::string, std::weak_ptr<ClusterHealth>> clusters;
};

Registry& registry() {
  static Registry r;
  return r;
}

std::int64_t ticks(Clock::time_point t) {
  return t.time_since_epoch().count();
}

}  // namespace

std::string endpoint_label(const config::Endpoint& e) {
  return e.address.find(':') != std::string::npos ? "[" + e.address + "]:" + std::to_string(e.port)
                                                  : e.address + ":" + std::to_string(e.port);
}

std::string endpoint_host(const config::Endpoint& e) {
  std::string host = e.written.substr(0, e.written.rfind(':'));
  if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return host;
}

std::string endpoint_tls_name(const config::Cluster& cluster, const config::Endpoint& e) {
  if (!cluster.tls) return {};
  return cluster.tls->server_name.empty() ? endpoint_host(e) : cluster.tls->server_name;
}

ClusterHosts hosts_for(const config::Cluster& cluster) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);  // snapshot builds only (control thread), never per request
  ClusterHosts out;
  auto& weak_health = r.clusters[cluster.name];
  out.health = weak_health.lock();
  if (!out.health) {
    out.health = std::make_shared<ClusterHealth>();
    weak_health = out.health;
  }
  for (const auto& e : cluster.endpoints) {
    auto key = std::make_pair(cluster.name, endpoint_label(e));
    auto& weak = r.hosts[key];
    auto host = weak.lock();
    if (!host) {
      host = std::make_shared<HostState>();
      host->cluster = cluster.name;
      host->label = key.second;
      weak = host;
    }
    out.hosts.push_back(std::move(host));
  }
  // Forget entries no snapshot holds any more (a removed endpoint starts fresh if it returns).
  std::erase_if(r.hosts, [](const auto& kv) { return kv.second.expired(); });
  std::erase_if(r.clusters, [](const auto& kv) { return kv.second.expired(); });
  return out;
}

Clock::time_point ejected_until(const HostState& host) {
  const auto until = host.ejected_until.load(std::memory_order_relaxed);
  return until == 0 ? Clock::time_point::max() : Clock::time_point(Clock::duration(until));
}

bool is_ejected(HostState& host, ClusterHealth& health, Clock::time_point now) {
  std::int64_t until = host.ejected_until.load(std::memory_order_relaxed);
  if (until == 0) return false;
  if (ticks(now) < until) return true;
  // Its time is served: the worker that swaps the deadline out puts it back.
  if (host.ejected_until.compare_exchange_strong(until, 0, std::memory_order_relaxed)) {
    health.version.fetch_add(1, std::memory_order_relaxed);
    spdlog::info("cluster '{}': endpoint {} back in balancing after its ejection", host.cluster,
                 host.label);
  }
  return false;
}

void report(const config::Cluster& cluster, const ClusterHosts& hosts, std::size_t index,
            Outcome outcome, std::string_view why) {
  const auto& od = cluster.outlier_detection;
  if (!od.enabled || index >= hosts.hosts.size()) return;
  HostState& h = *hosts.hosts[index];
  if (outcome == Outcome::Success) {
    // Read first: a healthy endpoint's counters are zero, and a store to a shared line on
    // every request would bounce it between the workers' cores.
    if (!h.dirty.load(std::memory_order_relaxed)) return;
    h.dirty.store(false, std::memory_order_relaxed);
    if (h.consecutive_5xx.load(std::memory_order_relaxed) != 0)
      h.consecutive_5xx.store(0, std::memory_order_relaxed);
    if (h.consecutive_gateway_failures.load(std::memory_order_relaxed) != 0)
      h.consecutive_gateway_failures.store(0, std::memory_order_relaxed);
    if (h.refusal_logged.load(std::memory_order_relaxed))
      h.refusal_logged.store(false, std::memory_order_relaxed);
    return;
  }
  bool trip = false;
  std::string reason;
  if (outcome == Outcome::GatewayFailure) {
    const auto n = h.consecutive_gateway_failures.fetch_add(1, std::memory_order_relaxed) + 1;
    if (od.consecutive_gateway_failures != 0 && n >= od.consecutive_gateway_failures) {
      trip = true;
      reason = std::to_string(n) + " consecutive gateway failures (last: " + std::string(why) + ")";
    }
  }
  // A gateway failure is a 5xx to the client too (502/504).
  const auto n5 = h.consecutive_5xx.fetch_add(1, std::memory_order_relaxed) + 1;
  // After the counts: a success that cleared `dirty` meanwhile then sees it set again.
  if (!h.dirty.load(std::memory_order_relaxed)) h.dirty.store(true, std::memory_order_relaxed);
  if (!trip && od.consecutive_5xx != 0 && n5 >= od.consecutive_5xx) {
    trip = true;
    reason = std::to_string(n5) + " consecutive 5xx (last: " + std::string(why) + ")";
  }
  if (!trip) return;
  const auto now = Clock::now();
  std::int64_t expected = h.ejected_until.load(std::memory_order_relaxed);
  if (expected != 0 && expected > ticks(now)) return;  // already out
  ClusterHealth& health = *hosts.health;
  const auto total = static_cast<std::int64_t>(hosts.hosts.size());
  std::int64_t out_now = 0;
  for (const auto& other : hosts.hosts) {
    const auto u = other->ejected_until.load(std::memory_order_relaxed);
    if (u != 0 && u > ticks(now)) ++out_now;
  }
  if ((out_now + 1) * 100 > static_cast<std::int64_t>(od.max_ejection_percent) * total) {
    // Logged once until the endpoint answers well again: a cluster of one dead endpoint
    // would otherwise log on every few requests.
    if (!h.refusal_logged.exchange(true, std::memory_order_relaxed))
      spdlog::warn(
          "cluster '{}': endpoint {} not ejected ({}): {} of {} endpoints already out "
          "(max_ejection_percent {})",
          cluster.name, h.label, reason, out_now, total, od.max_ejection_percent);
    h.consecutive_5xx.store(0, std::memory_order_relaxed);
    h.consecutive_gateway_failures.store(0, std::memory_order_relaxed);
    return;
  }
  // The ejection grows with each one (base, 2x base, ... up to max_ejection_time); an endpoint
  // not ejected for twice max_ejection_time starts over at the base time.
  const auto last = h.last_ejected.load(std::memory_order_relaxed);
  const auto max_time = std::chrono::duration_cast<Clock::duration>(od.max_ejection_time);
  std::uint32_t times = h.times_ejected.load(std::memory_order_relaxed);
  if (last != 0 && ticks(now) - last > 2 * max_time.count()) times = 0;
  times = std::min<std::uint32_t>(times + 1, 1000);  // the length is capped anyway
  const auto base = std::chrono::duration_cast<Clock::duration>(od.base_ejection_time);
  const auto length = std::min(base * times, max_time);
  const auto until = ticks(now + length);
  if (!h.ejected_until.compare_exchange_strong(expected, until, std::memory_order_relaxed))
    return;  // another worker ejected it (or put it back) just now
  health.version.fetch_add(1, std::memory_order_relaxed);
  h.times_ejected.store(times, std::memory_order_relaxed);
  h.last_ejected.store(ticks(now), std::memory_order_relaxed);
  h.ejections.fetch_add(1, std::memory_order_relaxed);
  h.consecutive_5xx.store(0, std::memory_order_relaxed);
  h.consecutive_gateway_failures.store(0, std::memory_order_relaxed);
  spdlog::warn("cluster '{}': endpoint {} ejected for {} ms: {}", cluster.name, h.label,
               std::chrono::duration_cast<std::chrono::milliseconds>(length).count(), reason);
}

}  // namespace turnpike::upstream
