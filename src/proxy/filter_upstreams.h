// Requests filters make themselves (a JWKS fetch): a GET through a cluster of the current
// snapshot with this worker's pools, independent of the request that asked. One per worker.
#pragma once

#include "proxy/worker_context.h"
#include "turnpike/filters/filter.h"

namespace turnpike::proxy {

class FilterUpstreams final : public filters::Upstreams {
 public:
  explicit FilterUpstreams(WorkerContext& ctx) : ctx_(ctx) {}
  void fetch(std::string_view cluster, std::string path_and_query, std::string host,
             std::chrono::milliseconds timeout, std::size_t max_bytes,
             std::function<void(filters::FetchResult)> done) override;

 private:
  WorkerContext& ctx_;
};

}  // namespace turnpike::proxy
