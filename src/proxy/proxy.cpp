#include "proxy/proxy.h"

#include <spdlog/spdlog.h>

#include "proxy/exchange.h"
#include "proxy/local_reply.h"
#include "proxy/request.h"
#include "support/block_cache.h"

namespace turnpike::proxy {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

const filters::HeaderList kNoHeaders;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

bool valid_request_id(std::string_view v) {
  if (v.empty() || v.size() > 200) return false;
  for (char c : v)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || c == '"' || c == '\\') return false;
  return true;
}

std::string websocket_key(WorkerContext& ctx) {
  static constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  unsigned char raw[18];
  for (unsigned char& c : raw)
    c = static_cast<unsigned char>(ctx.random());
  std::string out;
  for (std::size_t i = 0; i < sizeof raw; i += 3) {
    const std::uint32_t v = (raw[i] << 16) | (raw[i + 1] << 8) | raw[i + 2];
    for (int k = 18; k >= 0; k -= 6)
      out += kB64[(v >> k) & 63];
  }
  return out.substr(0, 22) + "==";  // 16 bytes, base64
}

// The request as the upstream gets it: forwarding headers, the route's host rewrite. Returns
// the target (rewritten path and query).
std::string upstream_request(RequestState& x, const router::Route& route) {
  http::RequestHead& req = x.req;
  const http::ConnectionInfo& ci = x.s.connection();
  // X-Forwarded-For appends the peer to what earlier proxies said.
  if (req.headers.has("x-forwarded-for")) {
    std::string forwarded;
    for (const auto& h : req.headers) {
      if (!http::iequals(h.name, "x-forwarded-for")) continue;
      forwarded += h.value;
      forwarded += ", ";
    }
    forwarded += ci.client_address;
    req.headers.set("X-Forwarded-For", forwarded);
  } else {
    req.headers.add("X-Forwarded-For", ci.client_address);
  }
  req.headers.set("X-Forwarded-Proto", ci.tls ? "https" : "http");
  if (ci.forward_client_cert) {
    // Only Turnpike vouches for a client certificate: never pass on a client's claim.
    req.headers.remove("x-forwarded-client-cert");
    if (!ci.client_cert_xfcc.empty())
      req.headers.add("X-Forwarded-Client-Cert", ci.client_cert_xfcc);
  }
  if (!req.authority.empty()) req.headers.set("X-Forwarded-Host", req.authority);
  req.headers.remove("expect");  // Turnpike answers 100-continue itself
  if (route.config->rewrite.host) req.headers.set("Host", *route.config->rewrite.host);
  std::string target = route.rewritten_path(req.path);
  if (!req.query.empty()) {
    target += '?';
    target += req.query;
  }
  return target;
}

}  // namespace

// ---- RequestState -----------------------------------------------------------------------------

void RequestState::on_client_reset() noexcept {
  client_gone = true;
  if (exchange) exchange->client_gone();
}

void RequestState::close_for_generation() noexcept {
  closed_for_generation = true;
  if (exchange) exchange->abort();
  s.reset();
}

// ---- the phases -------------------------------------------------------------------------------

// A phase is a coroutine only where it may suspend (filters, answers, the exchange): a request
// with no filters pays for no frame it does not use.
asio::awaitable<void> Proxy::serve(http::ServerStream& s) {
  // The request's state and its exchange live in blocks from the worker's cache, not in this
  // coroutine's frame: Asio recycles frames of up to about 1 KiB per thread and mallocs larger
  // ones, on every request.
  const support::BlockPtr<RequestState> state = support::make_block<RequestState>(ctx_, s);
  RequestState& x = *state;
  begin(x);
  bool answered = false;
  if (x.snap->any_listener_filters) answered = co_await listener_filters(x);
  if (!answered && !route(x)) {
    co_await error_reply(x, 404, "no route", kNoHeaders);
    answered = true;
  }
  if (!answered && !x.snap->route_filters[x.route->index].empty())
    answered = co_await route_filters(x);
  if (!answered && x.route->action != router::ActionKind::Proxy) {
    co_await answer(x);
  } else if (!answered) {
    Forward f = prepare_forward(x);
    if (f.status != 0) {
      co_await error_reply(x, f.status, f.error, kNoHeaders);
    } else {
      const support::BlockPtr<Exchange> exchange =
          support::make_block<Exchange>(x, *x.route, *f.pool, std::move(f.target));
      co_await exchange->run();
    }
  }
  log(x);
}

void Proxy::begin(RequestState& x) {
  if (const std::string* id = x.req.headers.get("x-request-id"); id && valid_request_id(*id)) {
    x.client_id = *id;
    x.request_id = x.client_id;
  } else {
    ctx_.next_request_id(x.id_buf);
    x.request_id = std::string_view(x.id_buf, sizeof x.id_buf);
    x.req.headers.set("X-Request-Id", x.request_id);
  }
}

FilterRun& Proxy::start_filters(RequestState& x) {
  if (x.filters) return *x.filters;
  x.filters = std::make_unique<FilterRun>(ctx_.executor(), ctx_.index(), upstreams_);
  filters::RequestContext& fc = x.filters->ctx;
  const http::ConnectionInfo& ci = x.s.connection();
  fc.client_address = ci.client_address;
  fc.client_ip = ci.client_address;
  fc.tls_client_subject = ci.client_cert_subject;
  fc.tls_client_dns = ci.client_cert_dns;
  fc.tls_client_uri = ci.client_cert_uri;
  fc.request_id = x.request_id;
  fc.listener = ci.listener;
  return *x.filters;
}

// Listener filters run before routing (they may answer for paths no route has: CORS
// preflights, IP denials).
asio::awaitable<bool> Proxy::listener_filters(RequestState& x) {
  const auto& ls = x.snap->config.listeners;
  for (std::size_t i = 0; i < ls.size(); ++i) {
    if (ls[i].name != x.s.connection().listener || x.snap->listener_filters[i].empty()) continue;
    FilterRun& run = start_filters(x);
    run.chain.append(x.snap->listener_filters[i]);
    const bool answered = co_await run.run_request(x.req, kListenerFilterTimeout);
    if (answered) co_await filter_reply(x, run.callbacks.reply);
    co_return answered;
  }
  co_return false;
}

bool Proxy::route(RequestState& x) {
  const router::RequestView view{x.req.method, x.req.host, x.req.path, x.req.query, &x.req.headers};
  x.route = x.snap->routes.match(view);
  if (!x.route) return false;
  x.route_name = x.route->name();
  x.filter_timeout = x.route->config->timeout;
  return true;
}

asio::awaitable<bool> Proxy::route_filters(RequestState& x) {
  const filters::FilterChain& chain = x.snap->route_filters[x.route->index];
  FilterRun& run = start_filters(x);
  run.ctx.route = x.route_name;
  run.chain.append(chain);
  const bool answered = co_await run.run_request(x.req, x.route->config->timeout);
  if (answered) co_await filter_reply(x, run.callbacks.reply);
  co_return answered;
}

// The route's own answer: a direct response or a redirect.
asio::awaitable<void> Proxy::answer(RequestState& x) {
  const config::Route& rc = *x.route->config;
  if (x.route->action == router::ActionKind::Respond) {
    const auto& r = *rc.respond;
    const std::string_view type = r.body.empty() ? std::string_view{} : r.content_type;
    co_await local_reply(x, r.status, type, r.body, r.headers);
  } else {
    filters::HeaderList location;
    location.emplace_back("Location", rc.redirect->location);
    co_await local_reply(x, rc.redirect->status, std::string_view(), std::string_view(), location);
  }
}

// Checks and prepares a proxied request; the pool to use, or the error to answer.
Proxy::Forward Proxy::prepare_forward(RequestState& x) {
  Forward f;
  const router::Route& route = *x.route;
  const config::Route& rc = *route.config;
  const std::uint32_t ci = route.backends.size() == 1
                               ? route.backends.front().cluster_index
                               : route.pick_cluster(ctx_.random() % route.total_weight);
  f.pool = &x.snap.pool(ci);
  x.cluster = f.pool->config().name;

  // WebSocket: HTTP/1.1 Upgrade, or RFC 8441 extended CONNECT from an HTTP/2 client, which
  // becomes an HTTP/1.1 upgrade upstream.
  http::RequestHead& req = x.req;
  if (!req.upgrade.empty()) {
    if (!rc.websocket) {
      f.status = 403, f.error = "websocket upgrades are disabled on this route";
      return f;
    }
    if (f.pool->config().protocol != "http1") {
      f.status = 502, f.error = "websocket needs an http1 cluster";
      return f;
    }
    req.headers.set("Connection", "Upgrade");
    req.headers.set("Upgrade", req.upgrade);
    if (req.protocol == http::Protocol::Http2) {
      req.headers.set("Sec-WebSocket-Key", websocket_key(ctx_));
      if (!req.headers.has("sec-websocket-version")) req.headers.add("Sec-WebSocket-Version", "13");
    }
    req.has_body = false;  // the tunnel carries the bytes, after the 101
    req.content_length.reset();
  }
  // A filter's body limit (request_size), tighter than the listener's: a declared length over
  // it is refused before anything goes upstream.
  const auto limit = x.filters ? x.filters->ctx.max_body_bytes : std::nullopt;
  if (limit && req.content_length && *req.content_length > *limit) {
    f.status = 413, f.error = "request body too large";
    return f;
  }
  f.target = upstream_request(x, route);
  return f;
}

void Proxy::log(RequestState& x) {
  if (x.client_gone) x.status = 499;  // nginx's "client closed request"
  if (x.filters) {                    // the filters' logging phase, exactly once
    http::ResponseHead done;
    done.status = x.status;
    x.filters->chain.complete(done);
  }
  observability::AccessRecord r;
  r.request_id = x.request_id;
  r.client = x.s.connection().client_address;
  r.method = x.req.method;
  r.path = x.req.path;  // the normalized request path (rewrites produce a separate target)
  r.route = x.route_name;
  r.cluster = x.cluster;
  r.upstream = x.upstream;
  if (x.filters) r.consumer = x.filters->ctx.consumer;
  r.status = x.status;
  r.bytes_in = x.s.bytes_received();
  r.bytes_out = x.s.bytes_sent();
  r.duration_ms = ms_since(x.start);
  r.upstream_ms = x.upstream_ms;
  r.upstream_attempts = x.upstream_attempts;
  r.upstream_failures = x.upstream_failures;
  r.response_reason = x.client_gone ? std::string_view("downstream_disconnect") : x.response_reason;
  r.mirror = x.mirror;
  r.request_buffered = x.request_buffered;
  ctx_.access_log().append(r);
}

void Proxy::on_rejected(const http::ConnectionInfo& conn, const http::RequestHead& partial,
                        int status, std::string_view details, std::uint64_t bytes_in,
                        std::uint64_t bytes_out) noexcept {
  if (status != 408)
    spdlog::debug("rejected request from {}: {} ({})", conn.client_address, status, details);
  observability::AccessRecord r;
  char rid[WorkerContext::kRequestIdSize];
  ctx_.next_request_id(rid);
  r.request_id = std::string_view(rid, sizeof rid);
  r.client = conn.client_address;
  r.method = partial.method;
  r.path = partial.path.empty() ? std::string_view(partial.target) : partial.path;
  r.status = status;
  r.bytes_in = bytes_in;
  r.bytes_out = bytes_out;
  ctx_.access_log().append(r);
}

}  // namespace turnpike::proxy
