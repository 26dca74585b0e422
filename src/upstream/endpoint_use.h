// One endpoint of a cluster as one worker uses it: published by each worker about once a second
// (proxy::WorkerContext::sweep), summed over the workers by GET /clusters. Plain data, so that
// core/ and admin/ can carry it without the pool's headers.
#pragma once

#include <cstdint>
#include <string>

namespace turnpike::upstream {

struct EndpointUse {
  std::string cluster;
  std::string label;           // "10.0.0.7:8080"
  std::uint32_t active = 0;    // requests in flight
  std::uint32_t open = 0;      // connections open (HTTP/1.1 and HTTP/2)
  std::uint32_t idle = 0;      // of which idle in the pool
  std::uint64_t requests = 0;  // tries sent
  std::uint64_t failures = 0;  // tries that failed: connect failure, reset, timeout
};

}  // namespace turnpike::upstream
