// Service discovery by DNS (`clusters[].discovery: dns`): the names of such clusters are
// resolved with c-ares on one thread of the process ("tp-dns"), never on a worker, the control
// thread or during a config load. Each name is resolved again every `dns.refresh` (no later than
// the records' TTL with `respect_ttl`); every A/AAAA record it has is an endpoint.
//
// The resolver keeps what each name resolved to. fill() writes those addresses into a config's
// DNS clusters when a snapshot is built (at start, on a reload, and when an answer changed), so
// the request path reads endpoints from the immutable snapshot as for any cluster, and the
// endpoints' shared state (upstream/host_state.h), keyed by address, survives the change.
//
// Answers: a name that does not exist or has no record of the family (NXDOMAIN, NODATA) has no
// endpoints; any other failure (timeout, refused, server failure) keeps the addresses last
// resolved, so a DNS outage never empties a cluster that was serving.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "turnpike/config/config.h"

namespace turnpike::upstream {

class DnsDiscovery {
 public:
  /// `changed`: called on the resolver thread (never under a lock of its own) when a name's
  /// addresses changed, its first answer included. It should hand the news to the control
  /// thread, which calls fill() on a copy of the running config.
  explicit DnsDiscovery(std::function<void()> changed);
  ~DnsDiscovery();  // stops and joins the resolver thread
  DnsDiscovery(const DnsDiscovery&) = delete;
  DnsDiscovery& operator=(const DnsDiscovery&) = delete;

  /// The names `cfg`'s DNS clusters need: new ones are resolved at once, names no cluster uses
  /// any more are forgotten. Returns at once. Control thread.
  void update(const config::Config& cfg);
  /// Waits until every name of the last update() had its first answer, at most `timeout`
  /// (at start, so a working DNS gives endpoints from the first request). False on timeout.
  bool wait_first(std::chrono::milliseconds timeout);
  /// Sets the `endpoints` of `cfg`'s DNS clusters from the answers known now: IP literals as
  /// written, and for each name every address it resolved to (sorted, so an answer in another
  /// order changes nothing), with the name's port and weight; an address listed twice counts
  /// once. Any thread.
  void fill(config::Config& cfg) const;
  /// GET /clusters: per name of `cluster`, what it resolved to, when, and the last error.
  nlohmann::json status(const config::Cluster& cluster) const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

/// True when the DNS clusters of `a` and `b` (the same config, filled at two moments) have the
/// same endpoints. Fills `why` with one line per cluster that differs ("cluster 'x': added ...,
/// removed ...").
bool same_dns_endpoints(const config::Config& a, const config::Config& b,
                        std::vector<std::string>& why);

}  // namespace turnpike::upstream
