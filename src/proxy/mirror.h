// Traffic mirroring (routes[].mirror): a copy of a request goes to another cluster, on a task of
// its own, its answer read and discarded. The copy owns everything it sends (head, target, body)
// and pins the request's snapshot (so the mirror cluster's pool lives as long as the copy); it
// is bounded by the route's timeout, admitted by the mirror cluster's limits, and never touches
// the real request: a slow, failing or overloaded mirror costs the client nothing. Owning worker
// thread only.
#pragma once

#include <chrono>
#include <span>
#include <string>

#include "proxy/request.h"

namespace turnpike::proxy {

/// Sends a copy of `x`'s request (`target`, and `body`: the whole request body) to cluster
/// `cluster_index` of its snapshot, `Host` suffixed with "-shadow" (Envoy's convention, so a
/// backend can tell). Returns at once.
void start_mirror(RequestState& x, std::uint32_t cluster_index, std::string target,
                  std::span<const char> body, std::chrono::milliseconds timeout);

}  // namespace turnpike::proxy
