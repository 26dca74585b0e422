// The per-request state machine, codec-neutral: route, filter chain, then a local answer
// (respond, redirect, errors) or the upstream exchange with streamed bodies, deadlines and one
// retry of a stale pooled connection; then exactly one access log line. One Proxy per worker;
// each serve() call is one request. Owning worker thread only.
#pragma once

#include <string_view>

#include "proxy/filter_upstreams.h"
#include "proxy/worker_context.h"
#include "turnpike/http/stream.h"

namespace turnpike::proxy {

class Proxy final : public http::StreamHandler {
 public:
  explicit Proxy(WorkerContext& ctx) : ctx_(ctx), upstreams_(ctx) {}

  boost::asio::awaitable<void> serve(http::ServerStream& stream) override;
  void on_rejected(const http::ConnectionInfo& conn, const http::RequestHead& partial, int status,
                   std::string_view details, std::uint64_t bytes_in,
                   std::uint64_t bytes_out) noexcept override;

 private:
  WorkerContext& ctx_;
  FilterUpstreams upstreams_;  // filters' own requests (JWKS fetches)
};

}  // namespace turnpike::proxy
