// The per-request state machine, codec-neutral, in named phases: listener filters, route, route
// filters, then the route's action — a local answer (respond, redirect) or the upstream
// exchange (proxy/exchange.h) — and exactly one access log line. Failures become local replies
// in one place per phase (proxy/local_reply.h). One Proxy per worker; each serve() call is one
// request. Owning worker thread only.
#pragma once

#include <string>
#include <string_view>

#include "proxy/filter_upstreams.h"
#include "proxy/worker_context.h"
#include "turnpike/http/stream.h"

namespace turnpike::proxy {

struct RequestState;
struct FilterRun;

class Proxy final : public http::StreamHandler {
 public:
  explicit Proxy(WorkerContext& ctx) : ctx_(ctx), upstreams_(ctx) {}

  boost::asio::awaitable<void> serve(http::ServerStream& stream) override;
  void on_rejected(const http::ConnectionInfo& conn, const http::RequestHead& partial, int status,
                   std::string_view details, std::uint64_t bytes_in,
                   std::uint64_t bytes_out) noexcept override;

 private:
  // The phases of serve(). The filter phases return true when a filter answered the request;
  // route() false when no route matches.
  void begin(RequestState& x);
  boost::asio::awaitable<bool> listener_filters(RequestState& x);
  bool route(RequestState& x);
  boost::asio::awaitable<bool> route_filters(RequestState& x);
  boost::asio::awaitable<void> answer(RequestState& x);
  struct Forward {
    upstream::ClusterPool* pool = nullptr;
    std::string target;  // the path and query sent upstream
    int status = 0;      // non-zero: answer this instead
    std::string_view error;
  };
  Forward prepare_forward(RequestState& x);
  void log(RequestState& x);

  FilterRun& start_filters(RequestState& x);

  WorkerContext& ctx_;
  FilterUpstreams upstreams_;  // filters' own requests (JWKS fetches)
};

}  // namespace turnpike::proxy
