#include "proxy/proxy.h"

#include <chrono>
#include <limits>
#include <optional>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/error.hpp>

#include "support/spawn.h"
#include "turnpike/filters/filter.h"
#include "turnpike/http/date.h"

namespace turnpike::proxy {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

bool valid_request_id(std::string_view v) {
  if (v.empty() || v.size() > 200) return false;
  for (char c : v)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || c == '"' || c == '\\') return false;
  return true;
}

// Listener filters run before routing, so no route's timeout bounds their suspensions.
constexpr std::chrono::milliseconds kListenerFilterTimeout{15'000};

// State of one request, for the answer and the log line. Registered with its snapshot, so the
// worker can close it when its generation has to go.

struct Exchange final : PinnedStream, http::StreamObserver {
  Exchange(http::ServerStream& stream, http::RequestHead& request) : s(stream), req(request) {
    s.set_observer(this);
  }
  ~Exchange() { s.set_observer(nullptr); }
  // The client went away (HTTP/2 RST_STREAM): stop the upstream exchange now rather than when
  // it answers, so the backend learns of it too (its stream is reset, or its connection closed).
  void on_client_reset() noexcept override {
    client_gone = true;
    if (conn) conn->close();
  }
  void close_for_generation() noexcept override {
    closed_for_generation = true;
    if (conn) conn->close();
    s.reset();
  }
  const void* connection_id() const noexcept override { return &s.connection(); }

  http::ServerStream& s;
  http::RequestHead& req;
  std::string request_id;
  std::string_view route;
  std::string_view cluster;
  std::string_view upstream;  // the endpoint label, owned by its pool
  int status = 0;
  double upstream_ms = -1;
  Clock::time_point start = Clock::now();
  std::shared_ptr<http::ClientStream> conn;  // the upstream exchange, while there is one
  bool closed_for_generation = false;
  bool client_gone = false;
  std::string grpc_error;               // the message of a gateway error, for gRPC clients
  struct FilterRun* filters = nullptr;  // the request's filter chain, when it has one
  std::chrono::milliseconds filter_timeout = kListenerFilterTimeout;  // for suspended filters
};

// The filter chain's view of the stream. A filter that suspends (Status::Stop) later calls
// resume() or send_local_reply() on the same worker; wait() parks the request until then.
class ChainCallbacks final : public filters::StreamCallbacks {
 public:
  ChainCallbacks(const asio::any_io_executor& ex, filters::RequestContext& ctx, unsigned worker,
                 filters::Upstreams& up)
      : event_(ex), ctx_(ctx), up_(up), worker_(worker) {}
  // The first answer of a phase wins. (A filter that timed out was told to drop its work, so it
  // does not call back; this also keeps a misbehaving one from touching a reply being sent.)
  void resume() override {
    if (replied) return;
    resumed_ = true;
    event_.cancel();
  }
  void send_local_reply(filters::LocalReply r) override {
    if (replied) return;
    reply = std::move(r);
    if (reply.status < 100 || reply.status > 599) reply.status = 500;
    replied = true;
    event_.cancel();
  }
  filters::RequestContext& context() override { return ctx_; }
  asio::io_context& io_context() override {
    return static_cast<asio::io_context&>(
        asio::query(event_.get_executor(), asio::execution::context));
  }
  unsigned worker_index() const override { return worker_; }
  filters::Upstreams& upstreams() override { return up_; }

  /// Parks until resume() or send_local_reply(); false when `timeout` passed first.
  asio::awaitable<bool> wait(std::chrono::milliseconds timeout) {
    if (!resumed_ && !replied) {
      event_.expires_after(timeout);
      co_await event_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    bool woken = resumed_ || replied;
    resumed_ = false;
    co_return woken;
  }

  /// A new phase (the response phase after the request phase) may answer again.
  void begin_phase() noexcept {
    replied = false;
    resumed_ = false;
  }

  filters::LocalReply reply;
  bool replied = false;

 private:
  asio::steady_timer event_;
  filters::RequestContext& ctx_;
  filters::Upstreams& up_;
  unsigned worker_;
  bool resumed_ = false;
};

// A request's filters (the listener's, then the route's): the per-request filter objects, the
// context they share and their callbacks.
struct FilterRun {
  FilterRun(const asio::any_io_executor& ex, unsigned worker, filters::Upstreams& up)
      : callbacks(ex, ctx, worker, up) {}
  filters::ActiveChain chain;
  filters::RequestContext ctx;
  ChainCallbacks callbacks;

  /// The response phase, for any response: upstream or local. Usually no filter suspends or
  /// answers, and respond_now() does it all without a coroutine frame (true); otherwise
  /// respond_later() finishes it. A filter's answer, or a 504 when one did not finish within
  /// the timeout, is then in callbacks.reply, and the caller sends it rather than `head`.
  bool respond_now(http::ResponseHead& head) {
    callbacks.begin_phase();
    if (chain.run_response(head, callbacks) == filters::Status::Stop) return false;
    add_response_headers(head);
    return true;
  }

  /// After respond_now() returned false: true when a filter's answer replaces `head`.
  asio::awaitable<bool> respond_later(http::ResponseHead& head, std::chrono::milliseconds timeout) {
    // Straight-line co_awaits and co_returns only: GCC 12 mis-builds this coroutine's frame
    // with a co_await in a condition followed by `break` out of the loop.
    for (;;) {
      if (callbacks.replied) co_return true;
      const bool woken = co_await callbacks.wait(timeout);
      if (!woken) {
        chain.cancel_suspended();
        callbacks.send_local_reply({504, "filter timed out", {}});
        co_return true;
      }
      if (callbacks.replied) co_return true;
      if (chain.run_response(head, callbacks) == filters::Status::Continue) {
        add_response_headers(head);
        co_return false;
      }
    }
  }

 private:
  void add_response_headers(http::ResponseHead& head) {
    for (const auto& [name, value] : ctx.response_headers)
      head.headers.add(name, value);
  }
};

// Once a chain (a listener's, a route's) starts, it shares the time budget of `timeout`
// across suspensions.

std::string json_error(std::string_view error, std::string_view request_id);

// Runs the request phase, parking while a filter is suspended. True when the request was
// answered locally (the reply is in run.callbacks).
asio::awaitable<bool> run_request_filters(FilterRun& run, http::RequestHead& req,
                                          std::chrono::milliseconds timeout) {
  ChainCallbacks& cb = run.callbacks;
  while (!cb.replied && run.chain.run_request(req, cb) == filters::Status::Stop) {
    if (cb.replied) break;
    if (!co_await cb.wait(timeout)) {
      run.chain.cancel_suspended();
      cb.send_local_reply({504, "filter timed out", {}});
      co_return true;
    }
  }
  if (cb.replied) run.chain.mark_replied();
  co_return cb.replied;
}

std::string json_error(std::string_view error, std::string_view request_id) {
  std::string body = R"({"error":")";
  for (char c : error) {
    if (c == '"' || c == '\\') body += '\\';
    body += c;
  }
  body += R"(","request_id":")";
  body += request_id;
  body += "\"}";
  return body;
}

bool is_grpc(const http::RequestHead& req) {
  const std::string* ct = req.headers.get("content-type");
  return ct && ct->starts_with("application/grpc");
}

// grpc-message is percent-encoded (gRPC over HTTP/2 spec).
std::string grpc_message(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// A gateway answer to a gRPC client: HTTP 200 with the status in trailers-only form (one
// HEADERS block), never an HTML or JSON body a gRPC client cannot read.
void grpc_head(http::ResponseHead& head, int status, std::string_view message) {
  head.status = 200;
  head.headers.add("content-type", "application/grpc");
  head.headers.add("grpc-status", std::to_string(http::grpc_status_for(status)));
  head.headers.add("grpc-message", grpc_message(message));
  head.has_body = false;
}

asio::awaitable<void> filter_reply(Exchange& x, filters::LocalReply r);

asio::awaitable<void> local_reply(
    Exchange& x, int status, std::string_view content_type, std::string_view body,
    const std::vector<std::pair<std::string, std::string>>& extra = {}) {
  x.status = status;
  if (x.client_gone) co_return;  // nobody to answer
  if (x.s.response_started()) {
    x.s.reset();
    co_return;
  }
  http::ResponseHead head;
  if (status >= 400 && is_grpc(x.req)) {
    grpc_head(head, status,
              x.grpc_error.empty() ? http::reason_phrase(status) : std::string_view(x.grpc_error));
    body = {};
  } else {
    head.status = status;
    head.headers.reserve(4 + extra.size());
    head.headers.add("Date", http::http_date_now());
    if (!content_type.empty()) head.headers.add("Content-Type", content_type);
    head.content_length = body.size();
    head.has_body = !body.empty();
  }
  for (const auto& [k, v] : extra)
    head.headers.add(k, v);
  // (No co_await inside a compound condition: GCC 12 miscompiles that.)
  bool replaced = false;
  if (x.filters && !x.filters->respond_now(head))
    replaced = co_await x.filters->respond_later(head, x.filter_timeout);
  if (replaced) {
    // A response phase answered instead; its answer meets only the filters before that one.
    co_await filter_reply(x, x.filters->callbacks.reply);
    co_return;
  }
  head.headers.add("X-Request-Id", x.request_id);
  co_await x.s.send_response(head, body, true);
}

asio::awaitable<void> error_reply(Exchange& x, int status, std::string_view error,
                                  const filters::HeaderList& extra = {}) {
  x.grpc_error.assign(error);
  std::string body = json_error(error, x.request_id);
  co_await local_reply(x, status, "application/json", body, extra);
}

// A filter's own answer. By value: a later response phase may overwrite the callbacks' reply.
asio::awaitable<void> filter_reply(Exchange& x, filters::LocalReply r) {
  if (r.status >= 400 || !r.error.empty()) {
    co_await error_reply(
        x, r.status, r.error.empty() ? http::reason_phrase(r.status) : std::string_view(r.error),
        r.headers);
  } else {
    co_await local_reply(x, r.status, {}, {}, r.headers);
  }
}

// Status for a downstream failure while reading the request body; 0: the client is gone.
int downstream_body_status(const error_code& ec) {
  if (ec == asio::error::timed_out) return 408;
  if (ec == bhttp::error::body_limit) return 413;
  if (ec.category() == error_code(bhttp::error::body_limit).category() &&
      ec != bhttp::error::partial_message)
    return 400;
  return 0;
}

// ---- WebSocket tunnels ----------------------------------------------------------------------

struct Tunnel {
  explicit Tunnel(const asio::any_io_executor& ex) : wake(ex) {}
  asio::steady_timer wake;
  Clock::time_point last = Clock::now();  // bytes moved either way
  Clock::time_point half_closed{};        // one direction ended cleanly
  int running = 2;
  bool failed = false;
};

// No deadline of their own: the tunnel's idle timeout is watched in tunnel().
constexpr std::chrono::milliseconds kTunnelReadTimeout = std::chrono::hours(24);
// After one side closed its direction, how long the other may still talk.
constexpr std::chrono::milliseconds kTunnelLinger = std::chrono::seconds(5);

asio::awaitable<void> pump_to_client(http::ClientStream& up, http::ServerStream& s, char* buf,
                                     Tunnel& t) {
  for (;;) {
    http::BodyRead r = co_await up.read_body({buf, BufferPool::kSize}, kTunnelReadTimeout);
    if (r.ec) {
      t.failed = true;
      break;
    }
    if (r.bytes) t.last = Clock::now();
    if (co_await s.send_body({buf, r.bytes}, r.last)) {
      t.failed = true;
      break;
    }
    if (r.last) {
      t.half_closed = Clock::now();
      break;
    }
  }
  --t.running;
  t.wake.cancel();
}

asio::awaitable<void> pump_to_upstream(http::ServerStream& s, http::ClientStream& up, char* buf,
                                       Tunnel& t) {
  for (;;) {
    http::BodyRead r = co_await s.read_body({buf, BufferPool::kSize});
    if (r.ec) {
      t.failed = true;
      break;
    }
    if (r.bytes) t.last = Clock::now();
    if (co_await up.send_body({buf, r.bytes}, r.last, kTunnelReadTimeout)) {
      t.failed = true;
      break;
    }
    if (r.last) {
      t.half_closed = Clock::now();
      break;
    }
  }
  --t.running;
  t.wake.cancel();
}

// Moves bytes both ways until both directions end, either fails, or nothing moved for `idle`.
asio::awaitable<void> tunnel(http::ServerStream& s, http::ClientStream& up,
                             std::chrono::milliseconds idle, BufferPool& buffers,
                             const asio::any_io_executor& ex) {
  Tunnel t(ex);
  auto down_buf = buffers.get();
  auto up_buf = buffers.get();
  // A pump that throws still counts itself out, so tunnel() closes both sides and returns.
  auto pump_failed = [&t] {
    t.failed = true;
    --t.running;
    t.wake.cancel();
  };
  asio::co_spawn(ex, pump_to_client(up, s, down_buf.get(), t),
                 support::log_exception("tunnel pump to the client", pump_failed));
  asio::co_spawn(ex, pump_to_upstream(s, up, up_buf.get(), t),
                 support::log_exception("tunnel pump to the upstream", pump_failed));
  bool closed = false;
  while (t.running > 0) {
    const auto now = Clock::now();
    const bool lingering = t.half_closed != Clock::time_point{};
    if (!closed &&
        (t.failed || now - t.last >= idle || (lingering && now - t.half_closed >= kTunnelLinger))) {
      closed = true;  // both pumps fail out of their I/O now
      up.close();
      s.reset();
    }
    Clock::time_point next = t.last + idle;
    if (lingering) next = std::min(next, t.half_closed + kTunnelLinger);
    t.wake.expires_at(closed ? now + std::chrono::seconds(1) : next);
    co_await t.wake.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  buffers.put(std::move(down_buf));
  buffers.put(std::move(up_buf));
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

}  // namespace

void Proxy::on_rejected(const http::ConnectionInfo& conn, const http::RequestHead& partial,
                        int status, std::string_view details, std::uint64_t bytes_in,
                        std::uint64_t bytes_out) noexcept {
  if (status != 408)
    spdlog::debug("rejected request from {}: {} ({})", conn.client_address, status, details);
  observability::AccessRecord r;
  std::string rid = ctx_.next_request_id();
  r.request_id = rid;
  r.client = conn.client_address;
  r.method = partial.method;
  r.path = partial.path.empty() ? std::string_view(partial.target) : partial.path;
  r.status = status;
  r.bytes_in = bytes_in;
  r.bytes_out = bytes_out;
  ctx_.access_log().append(r);
}

asio::awaitable<void> Proxy::serve(http::ServerStream& s) {
  SnapshotRef snap = ctx_.pin();
  http::RequestHead& req = s.request();
  Exchange x(s, req);
  snap.attach(x);

  if (const std::string* id = req.headers.get("x-request-id"); id && valid_request_id(*id)) {
    x.request_id = *id;
  } else {
    x.request_id = ctx_.next_request_id();
    req.headers.set("X-Request-Id", x.request_id);
  }

  BufferPool& buffers = ctx_.buffers();
  std::unique_ptr<char[]> buf;
  std::unique_ptr<FilterRun> filter_run;  // only when the listener or the route has filters
  auto start_filters = [&] {
    filter_run = std::make_unique<FilterRun>(ctx_.executor(), ctx_.index(), upstreams_);
    filters::RequestContext& fc = filter_run->ctx;
    const http::ConnectionInfo& ci = s.connection();
    fc.client_address = ci.client_address;
    fc.client_ip = ci.client_address;
    fc.tls_client_subject = ci.client_cert_subject;
    fc.tls_client_dns = ci.client_cert_dns;
    fc.tls_client_uri = ci.client_cert_uri;
    fc.request_id = x.request_id;
    fc.listener = ci.listener;
    x.filters = filter_run.get();
  };

  // Listener filters run before routing (they may answer for paths no route has: CORS
  // preflights, IP denials).
  bool answered = false;
  if (snap->any_listener_filters) {
    const auto& ls = snap->config.listeners;
    for (std::size_t i = 0; i < ls.size(); ++i) {
      if (ls[i].name != s.connection().listener || snap->listener_filters[i].empty()) continue;
      start_filters();
      filter_run->chain.append(snap->listener_filters[i]);
      answered = co_await run_request_filters(*filter_run, req, kListenerFilterTimeout);
      if (answered) co_await filter_reply(x, filter_run->callbacks.reply);
      break;
    }
  }

  const router::Route* route = nullptr;
  if (!answered) {
    router::RequestView view{req.method, req.host, req.path, req.query, &req.headers};
    route = snap->routes.match(view);
    if (!route) {
      co_await error_reply(x, 404, "no route");
      answered = true;
    }
  }
  if (!answered) {
    x.route = route->name();
    const config::Route& rc = *route->config;
    x.filter_timeout = rc.timeout;
    // Route filters, request phase. An empty chain costs nothing here.
    if (const filters::FilterChain& chain = snap->route_filters[route->index]; !chain.empty()) {
      if (!filter_run) start_filters();
      filter_run->ctx.route = x.route;
      filter_run->chain.append(chain);
      answered = co_await run_request_filters(*filter_run, req, rc.timeout);
      if (answered) co_await filter_reply(x, filter_run->callbacks.reply);
    }
    if (!answered) {
      switch (route->action) {
        case router::ActionKind::Respond: {
          const auto& r = *rc.respond;
          co_await local_reply(x, r.status, r.body.empty() ? std::string_view{} : r.content_type,
                               r.body, r.headers);
          break;
        }
        case router::ActionKind::Redirect: {
          const auto& r = *rc.redirect;
          std::vector<std::pair<std::string, std::string>>
              location;  // GCC 12: no init-list in co_await
          location.emplace_back("Location", r.location);
          co_await local_reply(x, r.status, {}, {}, location);
          break;
        }
        case router::ActionKind::Proxy: {
          std::uint32_t ci = route->backends.size() == 1
                                 ? route->backends.front().cluster_index
                                 : route->pick_cluster(ctx_.random() % route->total_weight);
          upstream::ClusterPool& pool = snap.pool(ci);
          x.cluster = pool.config().name;
          const auto timeout = rc.timeout;

          // Forwarding headers. X-Forwarded-For appends the peer to what earlier proxies said.
          const std::string& client = s.connection().client_address;
          if (req.headers.has("x-forwarded-for")) {
            std::string forwarded;
            for (const auto& h : req.headers) {
              if (!http::iequals(h.name, "x-forwarded-for")) continue;
              forwarded += h.value;
              forwarded += ", ";
            }
            forwarded += client;
            req.headers.set("X-Forwarded-For", forwarded);
          } else {
            req.headers.add("X-Forwarded-For", client);
          }
          req.headers.set("X-Forwarded-Proto", s.connection().tls ? "https" : "http");
          if (s.connection().forward_client_cert) {
            // Only Turnpike vouches for a client certificate: never pass on a client's claim.
            req.headers.remove("x-forwarded-client-cert");
            if (!s.connection().client_cert_xfcc.empty())
              req.headers.add("X-Forwarded-Client-Cert", s.connection().client_cert_xfcc);
          }
          if (!req.authority.empty()) req.headers.set("X-Forwarded-Host", req.authority);
          req.headers.remove("expect");
          if (rc.rewrite.host) req.headers.set("Host", *rc.rewrite.host);
          std::string target = route->rewritten_path(req.path);
          if (!req.query.empty()) {
            target += '?';
            target += req.query;
          }

          // WebSocket: HTTP/1.1 Upgrade, or RFC 8441 extended CONNECT from an HTTP/2 client,
          // which becomes an HTTP/1.1 upgrade upstream.
          const bool upgrade = !req.upgrade.empty();
          const bool h2_client = req.protocol == http::Protocol::Http2;
          if (upgrade) {
            if (!rc.websocket) {
              co_await error_reply(x, 403, "websocket upgrades are disabled on this route");
              break;
            }
            if (pool.config().protocol != "http1") {
              co_await error_reply(x, 502, "websocket needs an http1 cluster");
              break;
            }
            req.headers.set("Connection", "Upgrade");
            req.headers.set("Upgrade", req.upgrade);
            if (h2_client) {
              req.headers.set("Sec-WebSocket-Key", websocket_key(ctx_));
              if (!req.headers.has("sec-websocket-version"))
                req.headers.add("Sec-WebSocket-Version", "13");
            }
            req.has_body = false;  // the tunnel carries the bytes, after the 101
            req.content_length.reset();
          }

          buf = buffers.get();
          std::span<char> bspan(buf.get(), BufferPool::kSize);

          // First body bytes before taking an upstream connection (this also answers
          // Expect: 100-continue).
          http::BodyRead first;
          first.last = true;
          if (req.has_body) {
            first = co_await s.read_body(bspan);
            if (first.ec) {
              int st = downstream_body_status(first.ec);
              if (st)
                co_await error_reply(x, st,
                                     st == 413 ? "request body too large" : "bad request body");
              else
                x.status = 499, s.reset();
              break;
            }
          }
          // A filter's body limit (request_size), tighter than the listener's.
          const std::optional<std::uint64_t> body_limit =
              filter_run ? filter_run->ctx.max_body_bytes : std::nullopt;
          if (body_limit && first.bytes > *body_limit) {
            co_await error_reply(x, 413, "request body too large");
            break;
          }
          std::uint64_t body_bytes = first.bytes;
          bool body_streamed = false;
          upstream::EndpointState* ep = nullptr;
          std::shared_ptr<http::ClientStream>& conn = x.conn;
          http::ResponseHead resp;
          const bool head_req = req.method == "HEAD";
          Clock::time_point up_start = Clock::now();
          error_code ec;
          int downstream_failed = -1;  // >=0: status to answer for a downstream body failure

          for (int attempt = 0; attempt < 2; ++attempt) {
            ep = &pool.pick();
            x.upstream = ep->label;
            up_start = Clock::now();
            auto lease = co_await pool.acquire(*ep, attempt == 0);
            if (lease.ec) {
              ec = lease.ec;
              break;
            }
            conn = std::move(lease.conn);
            ec = co_await conn->send_request(req, target, {bspan.data(), first.bytes}, first.last,
                                             timeout);
            if (!ec && !first.last) {
              body_streamed = true;
              for (;;) {
                http::BodyRead r = co_await s.read_body(bspan);
                if (r.ec) {
                  downstream_failed = downstream_body_status(r.ec);
                  break;
                }
                body_bytes += r.bytes;
                if (body_limit && body_bytes > *body_limit) {
                  downstream_failed = 413;
                  break;
                }
                ec = co_await conn->send_body({bspan.data(), r.bytes}, r.last, timeout);
                if (ec || r.last) break;
              }
              if (downstream_failed >= 0) break;
            }
            if (!ec) ec = co_await conn->read_response_head(resp, head_req, timeout);
            // A pooled connection the upstream closed while idle fails before any response
            // byte: try once more on a fresh connection, if the request can be sent again.
            if (ec && lease.reused && conn->response_bytes() == 0 && !body_streamed &&
                ec != asio::error::timed_out) {
              conn->close();
              conn.reset();
              continue;
            }
            break;
          }

          if (downstream_failed >= 0) {
            if (conn) conn->close();
            if (downstream_failed > 0)
              co_await error_reply(
                  x, downstream_failed,
                  downstream_failed == 413 ? "request body too large" : "bad request body");
            else
              x.status = 499, s.reset();
            break;
          }
          if (ec) {
            if (conn) conn->close();
            x.upstream_ms = ms_since(up_start);
            if (ec == asio::error::timed_out)
              co_await error_reply(x, 504, "upstream timed out");
            else
              co_await error_reply(x, 502,
                                   conn ? "upstream connection failed" : "upstream connect failed");
            break;
          }

          // Response: head plus whatever body is already buffered in one write.
          x.status = resp.status;
          bool replaced = false;
          if (filter_run && !filter_run->respond_now(resp))
            replaced = co_await filter_run->respond_later(resp, rc.timeout);
          if (replaced) {
            // A response phase answered instead: the upstream's body is not wanted.
            conn->close();
            conn.reset();
            x.upstream_ms = ms_since(up_start);
            co_await filter_reply(x, filter_run->callbacks.reply);
            break;
          }
          resp.headers.set("X-Request-Id", x.request_id);
          if (!resp.headers.has("date")) resp.headers.add("Date", http::http_date_now());
          if (upgrade && resp.status == 101) {
            if (h2_client) {  // RFC 8441: 200 opens the tunnel; no key/accept exchange
              resp.status = 200;
              resp.headers.remove("sec-websocket-accept");
            } else {
              resp.headers.set("Upgrade", req.upgrade);
              resp.headers.set("Connection", "Upgrade");
            }
            resp.has_body = true;
            resp.content_length.reset();
            if (co_await s.send_response(resp, {}, false)) {
              conn->close();
              break;
            }
            co_await tunnel(s, *conn, rc.websocket_idle_timeout, buffers, ctx_.executor());
            x.upstream_ms = ms_since(up_start);
            conn->close();
            conn.reset();
            break;
          }
          http::BodyRead chunk = conn->read_buffered_body(bspan);
          bool done = chunk.last && !chunk.ec;
          if (chunk.ec) {
            conn->close();
            co_await error_reply(x, 502, "invalid upstream response");
            break;
          }
          // A response body limit (request_size's max_response_body_bytes): checked on what
          // is already buffered before the head goes out, then while the body streams.
          const std::uint64_t resp_limit = filter_run && filter_run->ctx.max_response_body_bytes
                                               ? *filter_run->ctx.max_response_body_bytes
                                               : std::numeric_limits<std::uint64_t>::max();
          std::uint64_t resp_bytes = chunk.bytes;
          if (resp_bytes > resp_limit) {
            conn->close();
            co_await error_reply(x, 502, "upstream response too large");
            break;
          }
          // Trailers (gRPC's grpc-status) end the response after the last body bytes.
          const http::HeaderMap* trailers = done ? conn->trailers() : nullptr;
          error_code wec =
              co_await s.send_response(resp, {bspan.data(), chunk.bytes}, done && !trailers);
          if (!wec && trailers) wec = co_await s.send_trailers(*trailers);
          if (wec) {
            conn->close();
            break;
          }
          while (!done) {
            http::BodyRead r = co_await conn->read_body(bspan, timeout);
            if (r.ec) {
              // Too late for an error status: abort the downstream side so the client sees an
              // incomplete response rather than a truncated one that looks whole.
              conn->close();
              s.reset();
              break;
            }
            resp_bytes += r.bytes;
            if (resp_bytes > resp_limit) {  // too late for a status: cut the response off
              conn->close();
              s.reset();
              break;
            }
            done = r.last;
            trailers = done ? conn->trailers() : nullptr;
            wec = co_await s.send_body({bspan.data(), r.bytes}, done && !trailers);
            if (!wec && trailers) wec = co_await s.send_trailers(*trailers);
            if (wec) {
              conn->close();
              done = false;
              break;
            }
          }
          x.upstream_ms = ms_since(up_start);
          if (done)
            pool.release(*ep, std::move(conn));
          else if (conn)
            conn->close();
          conn.reset();
          break;
        }
      }
    }
  }
  if (filter_run) {  // logging phase, exactly once
    http::ResponseHead done;
    done.status = x.client_gone ? 499 : x.status;
    filter_run->chain.complete(done);
  }
  if (buf) buffers.put(std::move(buf));

  if (x.client_gone) x.status = 499;  // nginx's "client closed request"
  observability::AccessRecord r;
  r.request_id = x.request_id;
  r.client = s.connection().client_address;
  r.method = req.method;
  r.path = req.path;  // the normalized request path (rewrites produce a separate target)
  r.route = x.route;
  r.cluster = x.cluster;
  r.upstream = x.upstream;
  if (filter_run) r.consumer = filter_run->ctx.consumer;
  r.status = x.status;
  r.bytes_in = s.bytes_received();
  r.bytes_out = s.bytes_sent();
  r.duration_ms = ms_since(x.start);
  r.upstream_ms = x.upstream_ms;
  ctx_.access_log().append(r);
}

}  // namespace turnpike::proxy
