// One request's state as it goes through the proxy's phases (listener filters, route, route
// filters, action, log): what the access log line and the local replies need. Lives in the
// frame of Proxy::serve; registered with its snapshot so the worker can close it when its
// generation has to go, and with its stream so it hears of the client leaving. Owning worker
// thread only.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/filter_run.h"
#include "proxy/worker_context.h"
#include "turnpike/http/stream.h"

namespace turnpike::router {
struct Route;
}

namespace turnpike::proxy {

class Exchange;

// Listener filters run before routing, so no route's timeout bounds their suspensions.
inline constexpr std::chrono::milliseconds kListenerFilterTimeout{15'000};

struct RequestState final : PinnedStream, http::StreamObserver {
  using Clock = std::chrono::steady_clock;

  RequestState(WorkerContext& context, http::ServerStream& stream)
      : ctx(context), s(stream), req(stream.request()), snap(context.pin()) {
    snap.attach(*this);
    s.set_observer(this);
  }
  ~RequestState() { s.set_observer(nullptr); }
  RequestState(const RequestState&) = delete;
  RequestState& operator=(const RequestState&) = delete;

  // The client went away (an HTTP/2 RST_STREAM, an HTTP/1.1 close): stop the upstream exchange
  // now rather than when it answers, so the backend learns of it too (its stream is reset, or
  // its connection closed).
  void on_client_reset() noexcept override;
  void close_for_generation() noexcept override;
  const void* connection_id() const noexcept override { return &s.connection(); }

  WorkerContext& ctx;
  http::ServerStream& s;
  http::RequestHead& req;
  SnapshotRef snap;
  std::string_view request_id;  // in id_buf or client_id
  char id_buf[WorkerContext::kRequestIdSize];
  std::string client_id;  // the client's own X-Request-Id, when it sent a usable one
  const router::Route* route = nullptr;
  std::string_view route_name;
  std::string_view cluster;
  std::string_view upstream;  // the endpoint label, owned by its pool
  int status = 0;
  double upstream_ms = -1;
  std::uint32_t upstream_attempts = 0;
  // routes[].request_buffering: body bytes read before the upstream was picked; -1: none.
  std::int64_t request_buffered = -1;
  std::string upstream_failures;     // "endpoint: what" per failed try, one per line
  std::string_view response_reason;  // access log: why Turnpike answered so (static text)
  std::string_view mirror;           // access log: "sent" or "skipped" (static text)
  Clock::time_point start = Clock::now();
  std::unique_ptr<FilterRun> filters;  // only when the listener or the route has filters
  std::chrono::milliseconds filter_timeout = kListenerFilterTimeout;  // for suspended filters
  std::string grpc_error;        // the message of a gateway error, for gRPC clients
  int grpc_code = -1;            // its gRPC status, when not the HTTP status's mapping
  Exchange* exchange = nullptr;  // the upstream exchange, while there is one
  bool client_gone = false;
  bool closed_for_generation = false;
};

}  // namespace turnpike::proxy
