#include "proxy/exchange.h"

#include <cstring>
#include <limits>
#include <optional>
#include <string_view>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/error.hpp>

#include "proxy/local_reply.h"
#include "proxy/mirror.h"
#include "proxy/tunnel.h"
#include "turnpike/http/date.h"
#include "upstream/retry.h"

namespace turnpike::proxy {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using boost::system::error_code;

namespace {

// An operation bounded by the exchange's watchdog rather than by a deadline of its own.
constexpr std::chrono::milliseconds kUnbounded = std::chrono::hours(24);
constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
const filters::HeaderList kNoHeaders;

// Status for a downstream failure while reading the request body; 0: the client is gone.
int downstream_status(const error_code& ec) {
  if (ec == asio::error::timed_out) return 408;
  if (ec == bhttp::error::body_limit) return 413;
  if (ec.category() == error_code(bhttp::error::body_limit).category() &&
      ec != bhttp::error::partial_message)
    return 400;
  return 0;
}

// The value of `name` in a list of `name=value` items separated by `sep` (a Cookie header, a
// query string), compared as sent (no decoding); none when absent.
std::optional<std::string_view> find_item(std::string_view list, char sep, std::string_view name) {
  while (!list.empty()) {
    const std::size_t end = list.find(sep);
    std::string_view item = list.substr(0, end);
    list = end == std::string_view::npos ? std::string_view{} : list.substr(end + 1);
    while (!item.empty() && item.front() == ' ')
      item.remove_prefix(1);
    const std::size_t eq = item.find('=');
    if (item.substr(0, eq) == name)
      return eq == std::string_view::npos ? std::string_view{} : item.substr(eq + 1);
  }
  return std::nullopt;
}

// The request's key for a consistent-hash policy (clusters[].hash_on), hashed; none when the
// request does not carry it (the balancer then picks at random).
std::optional<std::uint64_t> hash_key(const config::HashOn& on, const RequestState& x) {
  using Kind = config::HashOn::Kind;
  switch (on.kind) {
    case Kind::None:
      return std::nullopt;
    case Kind::Header:
      if (const std::string* v = x.req.headers.get(on.name)) return upstream::hash_bytes(*v);
      return std::nullopt;
    case Kind::Cookie:
      for (const auto& e : x.req.headers.entries()) {
        if (!http::iequals(e.name, "cookie")) continue;
        if (auto v = find_item(e.value, ';', on.name)) return upstream::hash_bytes(*v);
      }
      return std::nullopt;
    case Kind::Query:
      if (auto v = find_item(x.req.query, '&', on.name)) return upstream::hash_bytes(*v);
      return std::nullopt;
    case Kind::ClientIp:
      return upstream::hash_bytes(x.filters ? std::string_view(x.filters->ctx.client_ip)
                                            : std::string_view(x.s.connection().client_address));
    case Kind::Consumer:
      if (x.filters && !x.filters->ctx.consumer.empty())
        return upstream::hash_bytes(x.filters->ctx.consumer);
      return std::nullopt;
  }
  return std::nullopt;
}

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

Exchange::Exchange(RequestState& x, const router::Route& route, upstream::ClusterPool& pool,
                   std::string target)
    : x_(x),
      route_(route),
      rc_(*route.config),
      pool_(pool),
      target_(std::move(target)),
      buf_(x.ctx.buffers().get()) {
  x_.exchange = this;
  x_.cluster = pool.config().name;
  resp_limit_ = x_.filters && x_.filters->ctx.max_response_body_bytes
                    ? *x_.filters->ctx.max_response_body_bytes
                    : std::numeric_limits<std::uint64_t>::max();
}

Exchange::~Exchange() {
  if (ep_ != nullptr) pool_.request_ended(*ep_);
  if (retrying_) pool_.retry_ended();
  x_.exchange = nullptr;
  x_.ctx.buffers().put(std::move(buf_));
}

std::chrono::milliseconds Exchange::op_timeout(std::chrono::milliseconds own) const noexcept {
  // While the request body streams up, both directions are live: the watchdog bounds them.
  return pumping_ || !upload_ended_ ? kUnbounded : own;
}

void Exchange::wake_watchdog() noexcept {
  if (timer_) timer_->cancel();
}

void Exchange::fail(int status, std::string_view error) noexcept {
  if (failure_.status != 0) return;
  failure_ = {status, error};
  // Whatever either direction waits on fails now.
  wait_.cancel();
  if (conn_) conn_->close();
  if (pumping_ || buffering_) x_.s.cancel_read();
  wake_watchdog();
}

void Exchange::client_gone() noexcept {
  x_.client_gone = true;
  fail(499, "client closed request");
}

void Exchange::abort() noexcept {
  fail(-1, "request closed");
}

// What a failed try came to, for the retry decision (upstream/retry.h).
upstream::TryResult Exchange::try_result(const error_code& ec, bool connect_failed) const noexcept {
  using Kind = upstream::TryResult::Kind;
  upstream::TryResult r;
  if (!ec) {
    r.kind = Kind::Status;
    r.status = resp_.status;
  } else if (connect_failed || !conn_) {
    r.kind = Kind::ConnectFailure;
  } else if (conn_->refused()) {
    r.kind = Kind::Refused;  // HTTP/2: the backend says it did not process it
  } else if (ec == asio::error::timed_out) {
    r.kind = Kind::Timeout;
  } else {
    r.kind = Kind::Reset;
    // A pooled connection the backend closed while idle fails like this, before any byte.
    r.stale = reused_ && conn_->response_bytes() == 0;
  }
  return r;
}

// Whether the whole request can be sent again: nothing of it was sent (a failed connect), or
// all of it is still held here (the body, if any, came whole with the head and no upload
// streamed), whether or not the failed try got it all out: a pooled connection the backend
// closed can fail while the request is being written, too.
bool Exchange::replayable(bool connect_failed) const noexcept {
  return connect_failed || (!pumping_ && first_.last);
}

// ---- phases ---------------------------------------------------------------------------------

// The phases that may suspend are awaited here (connect, send, receive, respond, join, answer);
// the others are plain functions, so a request without a body pays for few coroutine frames.
asio::awaitable<void> Exchange::run() {
  upstream::RetryState retry(rc_.retry ? &*rc_.retry : nullptr, x_.req.method,
                             pool_.endpoint_count());
  // routes[].timeout bounds the wait for the response head across all tries (set when the
  // first try starts).
  Clock::time_point head_deadline{};
  error_code ec;
  bool timed_out_overall = false;  // the last try ran out of the route's timeout
  if (rc_.request_buffering && x_.req.has_body) co_await buffer_body();
  for (bool first_attempt = true;; first_attempt = false) {
    if (!begin_attempt(first_attempt)) break;
    if (first_attempt) {
      head_deadline = up_start_ + rc_.timeout;
      if (route_.mirror_cluster >= 0) mirror();
    }
    // (up_start_: begin_attempt's clock reading.) This try has what is left of the route's
    // timeout, at most per_try_timeout; when it is all that is left, the try is the last chance.
    const std::chrono::milliseconds try_timeout = first_attempt
                                                      ? retry.first_try_timeout(rc_.timeout)
                                                      : retry.try_timeout(head_deadline, up_start_);
    // (try_timeout is whole milliseconds, rounded down.)
    const bool last_chance =
        up_start_ + try_timeout + std::chrono::milliseconds(1) >= head_deadline;
    bool connect_failed = false;
    if (!conn_) {
      ec = co_await connect();
      connect_failed = static_cast<bool>(ec);
      if (failure_.status != 0) break;  // ended meanwhile (the client left): nothing goes up
    }
    const std::span<const char> first(first_data(), first_.bytes);
    const http::HeaderMap* trailers = first_.last ? x_.s.request_trailers() : nullptr;
    if (!ec)
      ec = co_await conn_->send_request(x_.req, target_, first, first_.last && !trailers,
                                        try_timeout);
    if (!ec && trailers) ec = co_await conn_->send_trailers(*trailers, try_timeout);
    if (!ec) start_upload();
    const bool head_request = x_.req.method == "HEAD";
    if (!ec) ec = co_await conn_->read_response_head(resp_, head_request, op_timeout(try_timeout));
    if (failure_.status != 0) break;
    timed_out_overall = last_chance && ec == asio::error::timed_out;
    // A response head whose status the route does not retry: the answer.
    if (!ec && !retry.retriable_status(resp_.status)) break;
    if (!retry_after(ec, connect_failed, timed_out_overall, head_deadline, retry)) break;
    ec = {};
    const std::chrono::milliseconds wait = retry.backoff(x_.ctx.random());
    if (wait.count() > 0) {
      const bool waited = co_await backoff(wait, head_deadline);
      if (!waited) break;
    }
  }
  if (!ec && failure_.status == 0)
    pool_.report(*ep_,
                 resp_.status >= 500 ? upstream::Outcome::Status5xx : upstream::Outcome::Success,
                 "status 5xx from the backend");
  if (ec)
    fail_upstream(ec, retry.configured() && !timed_out_overall);
  else if (failure_.status == 0)
    head_received_ = true, touch();
  if (failure_.status == 0) co_await respond();
  stop();
  if (children_) co_await children_->join();
  release();
  if (failure_.status != 0) co_await answer_failure();
}

// After a failed try (`ec`, or a response head with a status the route retries): whether to
// send another, by the route's policy (upstream/retry.h), the route's deadline, and the
// cluster's caps on retries. When so, the failed try is accounted for and its connection
// closed. `timed_out_overall`: the try timed out with what was left of the route's timeout.
bool Exchange::retry_after(const error_code& ec, bool connect_failed, bool timed_out_overall,
                           Clock::time_point head_deadline, upstream::RetryState& retry) {
  if (ec) report_failure(ec, connect_failed);
  if (timed_out_overall || Clock::now() >= head_deadline) return false;  // no time left
  const upstream::TryResult result = try_result(ec, connect_failed);
  if (!retry.next(result, replayable(connect_failed))) return false;
  // max_retries and the retry budget: past them, the failure stands. One slot per exchange,
  // however many retries it makes. A try that cannot have reached a backend (a failed connect,
  // a refused stream, the keep-alive race) is sent again without one: it adds no load.
  if (!retrying_ && result.may_have_reached_backend()) {
    const char* refused = pool_.retry_started(retry.budget(pool_.active_requests()));
    if (refused != nullptr) {
      note_failure("retry not sent", refused);
      return false;
    }
    retrying_ = true;
  }
  if (!ec) {  // a retried answer: the client never sees it; a 5xx counts against the endpoint
    if (resp_.status >= 500)
      pool_.report(*ep_, upstream::Outcome::Status5xx, "status 5xx from the backend");
    note_failure("status " + std::to_string(resp_.status), "retried");
  }
  if (conn_) {
    conn_->close();
    conn_.reset();
  }
  resp_ = {};
  return true;
}

// routes[].mirror: a copy of the request to the mirror cluster, when the draw says so and the
// whole request is at hand (no body, or all of it came with the head).
void Exchange::mirror() {
  const config::Mirror& m = *rc_.mirror;
  if (m.percent < 100 && x_.ctx.random() % 100 >= m.percent) {
    x_.mirror = "skipped";
    return;
  }
  if (!first_.last || x_.s.request_trailers() != nullptr) {
    x_.mirror = "skipped";
    return;
  }
  try {
    start_mirror(x_, static_cast<std::uint32_t>(route_.mirror_cluster), target_,
                 std::span<const char>(first_data(), first_.bytes), rc_.timeout);
    x_.mirror = "sent";
  } catch (...) {  // (a copy that could not be made: the real request goes on)
    x_.mirror = "skipped";
  }
}

// The wait before a retry, on the watchdog's timer (idle between tries: no upload runs, or the
// request would not be replayable), so that a client leaving (fail()) ends it; never past
// `deadline` (the route's timeout). False when the request failed meanwhile.
asio::awaitable<bool> Exchange::backoff(std::chrono::milliseconds wait,
                                        Clock::time_point deadline) {
  if (!timer_) timer_.emplace(x_.ctx.executor());
  timer_->expires_at(std::min(Clock::now() + wait, deadline));
  co_await timer_->async_wait(asio::as_tuple(asio::use_awaitable));
  co_return failure_.status == 0;
}

// Outlier detection's view of a failed attempt: a connect failure, a timeout, or a reset on a
// fresh connection counts against the endpoint; a pooled connection the backend had closed
// while idle (the usual keep-alive race) does not.
void Exchange::report_failure(const error_code& ec, bool connect_failed) noexcept {
  const char* what = connect_failed                 ? "connect failed"
                     : ec == asio::error::timed_out ? "timed out"
                                                    : "connection failed";
  note_failure(what, ec.message());
  if (!connect_failed && ec != asio::error::timed_out && reused_) return;
  pool_.report(*ep_, upstream::Outcome::GatewayFailure, what);
}

// The access log's list of failed tries: "endpoint: what (detail)", one per line.
void Exchange::note_failure(std::string_view what, std::string_view detail) noexcept {
  try {
    if (!x_.upstream_failures.empty()) x_.upstream_failures += '\n';
    x_.upstream_failures += ep_ != nullptr ? std::string_view(ep_->label) : x_.cluster;
    x_.upstream_failures += ": ";
    x_.upstream_failures += what;
    x_.upstream_failures += " (";
    x_.upstream_failures += detail;
    x_.upstream_failures += ')';
  } catch (...) {
  }
}

// A cluster limit refused the request: 503, and RESOURCE_EXHAUSTED for gRPC clients.
void Exchange::refuse(upstream::Overflow why) noexcept {
  overflow_ = why;
  x_.response_reason = "upstream_overflow";
  x_.grpc_code = 8;  // RESOURCE_EXHAUSTED
  note_failure("upstream overloaded", upstream::overflow_name(why));
  fail(503, "upstream overloaded");
}

void Exchange::fail_upstream(const error_code& ec, bool per_try) noexcept {
  if (failure_.status != 0) return;  // already failed, with its own reason
  if (ec == asio::error::timed_out) {
    // per_try_timeout ran out before the route's timeout did.
    x_.response_reason = per_try ? "per_try_timeout" : "upstream_timeout";
    fail(504, "upstream timed out");
  } else if (!conn_) {
    x_.response_reason = "upstream_connect_failure";
    fail(502, "upstream connect failed");
  } else if (ec.category() == error_code(bhttp::error::body_limit).category()) {
    x_.response_reason = "upstream_protocol_error";
    fail(502, "invalid upstream response");
  } else {
    x_.response_reason = "upstream_reset";
    fail(502, "upstream connection failed");
  }
}

// routes[].request_buffering: reads the request body into memory, up to max_bytes, before an
// endpoint is picked or a connection taken, so a slow upload holds no backend connection. A
// body that fits is held whole: it goes up with the head in one go and is replayable like a
// body-less request. A longer one goes up once max_bytes are here, the rest streamed by
// upload(). The client's stalls are bounded as when the body streams (the listener's
// body_timeout, the route's idle_timeout: 408), and so is the memory: max_bytes at most, grown
// as the body comes (so a client that declares a large length and sends little holds little).
asio::awaitable<void> Exchange::buffer_body() {
  buffered_ = true;
  first_ = {};
  const std::uint64_t max = rc_.request_buffering->max_bytes;
  const auto limit = x_.filters ? x_.filters->ctx.max_body_bytes : std::nullopt;
  const std::chrono::milliseconds stall =
      std::min(x_.s.connection().body_timeout, std::chrono::milliseconds(rc_.idle_timeout));
  constexpr std::uint64_t kFirstChunk = 64 * 1024;
  constexpr std::uint64_t kFirstDeclared = 1024 * 1024;
  std::uint64_t cap = std::max<std::uint64_t>(
      1, std::min({x_.req.content_length.value_or(kFirstChunk), kFirstDeclared, max}));
  held_ = std::make_unique_for_overwrite<char[]>(cap);
  std::uint64_t size = 0;
  bool last = false;
  buffering_ = true;
  while (!last && size < max) {
    if (size == cap) {  // (a body without a declared length, or longer than it said)
      const std::uint64_t grown = std::min(max, std::max(cap * 2, kFirstChunk));
      auto bigger = std::make_unique_for_overwrite<char[]>(grown);
      std::memcpy(bigger.get(), held_.get(), size);
      held_ = std::move(bigger);
      cap = grown;
    }
    const std::span<char> room(held_.get() + size, cap - size);
    const http::BodyRead r = co_await x_.s.read_body(room, stall);
    if (failure_.status != 0) break;  // the client left, or the request was closed
    if (r.ec) {
      const int status = downstream_status(r.ec);
      if (status == 0)
        client_gone();
      else
        fail(status, status == 408   ? "request body timeout"
                     : status == 413 ? "request body too large"
                                     : "bad request body");
      break;
    }
    size += r.bytes;
    last = r.last;
    if (limit && size > *limit) {
      fail(413, "request body too large");
      break;
    }
  }
  buffering_ = false;
  x_.request_buffered = size;
  first_.bytes = size;
  first_.last = last;
  body_bytes_ = size;
  // Held whole: the backend gets a Content-Length, whatever the client's framing was (nginx
  // does the same), unless trailers must follow (HTTP/1.1 carries them only when chunked).
  if (last && !x_.req.content_length && x_.s.request_trailers() == nullptr)
    x_.req.content_length = size;
}

// Takes the body bytes that came with the head (first attempt), picks an endpoint and a pooled
// connection or stream with it, if there is one. False when the request failed (fail()).
bool Exchange::begin_attempt(bool first_attempt) {
  if (first_attempt && buffered_) {
    if (failure_.status != 0) return false;  // (buffer_body() failed)
  } else if (first_attempt) {
    first_ = {};
    first_.last = true;
    if (x_.req.has_body) first_ = x_.s.read_buffered_body({buf_.get(), BufferPool::kSize});
    if (first_.ec) {
      const int status = downstream_status(first_.ec);
      fail(status ? status : 400, "bad request body");
      return false;
    }
    body_bytes_ = first_.bytes;
    const auto limit = x_.filters ? x_.filters->ctx.max_body_bytes : std::nullopt;
    if (limit && body_bytes_ > *limit) {
      fail(413, "request body too large");
      return false;
    }
  }
  up_start_ = Clock::now();
  if (first_attempt) {
    if (pool_.none_usable(up_start_)) {
      x_.response_reason = "no_healthy_upstream";
      note_failure("no healthy upstream", "every endpoint unhealthy or ejected");
      fail(503, "no healthy upstream");
      return false;
    }
    if (!pool_.admits_request()) {
      refuse(upstream::Overflow::MaxRequests);
      return false;
    }
  }
  const upstream::EndpointState* previous = ep_;  // a retry's: another endpoint, if one is usable
  if (ep_ != nullptr) pool_.request_ended(*ep_);
  const config::HashOn& hash_on = pool_.config().hash_on;
  ep_ =
      &pool_.pick(hash_on.kind == config::HashOn::Kind::None ? std::nullopt : hash_key(hash_on, x_),
                  previous, up_start_);
  pool_.request_started(*ep_);
  ++x_.upstream_attempts;
  x_.upstream = ep_->label;
  // A request that must not run twice gets a pooled connection only if it still looks alive.
  auto lease = pool_.take(*ep_, first_attempt, !upstream::is_idempotent(x_.req.method));
  if (lease.overflow != upstream::Overflow::None) {
    refuse(lease.overflow);
    return false;
  }
  conn_ = std::move(lease.conn);
  reused_ = lease.reused;
  return true;
}

// A new HTTP/1.1 connection to the endpoint (none was pooled), or one released by another
// request while this one waited at max_connections.
asio::awaitable<error_code> Exchange::connect() {
  auto lease = co_await pool_.connect(*ep_, &wait_);
  if (lease.overflow != upstream::Overflow::None) {
    refuse(lease.overflow);
    co_return asio::error::no_buffer_space;
  }
  conn_ = std::move(lease.conn);
  reused_ = lease.reused;
  co_return lease.ec;
}

// The request went up with the body bytes that came with it: the rest of the body, if any,
// flows up (upload()) while the response comes down.
void Exchange::start_upload() {
  touch();
  if (first_.last) {
    upload_done_ = upload_ended_ = true;
    upload_ended_at_ = Clock::now();
    return;
  }
  pumping_ = true;
  timer_.emplace(x_.ctx.executor());
  children_.emplace(x_.ctx.executor());
  children_->spawn(upload(), "request body upload", [this] {
    pumping_ = false;  // (its end of loop did not run)
    upload_ended_ = true;
    fail(-1, "internal error");
  });
  children_->spawn(watchdog(), "exchange watchdog");
}

// The response phase of the filters, then the head (with what body is already here) and the
// body to the client.
asio::awaitable<void> Exchange::respond() {
  x_.status = resp_.status;
  bool replaced = false;
  const bool immediate = !x_.filters || x_.filters->respond_now(resp_);
  if (!immediate) replaced = co_await x_.filters->respond_later(resp_, rc_.timeout);
  if (replaced) {
    // A response phase answered instead: the upstream's body is not wanted.
    conn_->close();
    co_await filter_reply(x_, x_.filters->callbacks.reply);
    co_return;
  }
  resp_.headers.set("X-Request-Id", x_.request_id);
  if (!resp_.headers.has("date")) resp_.headers.add("Date", http::http_date_now());

  if (!x_.req.upgrade.empty() && resp_.status == 101) {
    co_await upgrade();
    co_return;
  }

  const std::span<char> buf(buf_.get(), BufferPool::kSize);
  http::BodyRead chunk = conn_->read_buffered_body(buf);
  if (chunk.ec) {
    fail(502, "invalid upstream response");
    co_return;
  }
  std::uint64_t bytes = chunk.bytes;
  if (bytes > resp_limit_) {
    fail(502, "upstream response too large");
    co_return;
  }
  // The head with what body is already here in one write; trailers (gRPC's grpc-status) after
  // the last body bytes.
  bool done = chunk.last;
  const http::HeaderMap* trailers = done ? conn_->trailers() : nullptr;
  error_code wec = co_await x_.s.send_response(resp_, buf.first(chunk.bytes), done && !trailers);
  if (!wec && trailers) wec = co_await x_.s.send_trailers(*trailers);
  while (!wec && !done) {
    chunk = co_await conn_->read_body(buf, op_timeout(rc_.idle_timeout));
    if (chunk.ec) {
      // Too late for an error status: the client sees the response cut off.
      fail(chunk.ec == asio::error::timed_out ? 504 : 502, "upstream response incomplete");
      co_return;
    }
    touch();
    bytes += chunk.bytes;
    if (bytes > resp_limit_) {
      fail(502, "upstream response too large");
      co_return;
    }
    done = chunk.last;
    trailers = done ? conn_->trailers() : nullptr;
    wec = co_await x_.s.send_body(buf.first(chunk.bytes), done && !trailers);
    if (!wec && trailers) wec = co_await x_.s.send_trailers(*trailers);
    if (!wec) touch();
  }
  if (wec) {
    fail(-1, "client write failed");
    co_return;
  }
  response_done_ = true;
}

// A WebSocket upgrade the backend accepted: the 101 (HTTP/2: 200) to the client, then a tunnel.
asio::awaitable<void> Exchange::upgrade() {
  if (x_.req.protocol == http::Protocol::Http2) {
    // RFC 8441: 200 opens the tunnel; no key/accept exchange.
    resp_.status = 200;
    resp_.headers.remove("sec-websocket-accept");
  } else {
    resp_.headers.set("Upgrade", x_.req.upgrade);
    resp_.headers.set("Connection", "Upgrade");
  }
  resp_.has_body = true;
  resp_.content_length.reset();
  const error_code wec = co_await x_.s.send_response(resp_, std::span<const char>(), false);
  if (wec) {
    fail(-1, "client write failed");
    co_return;
  }
  co_await tunnel(x_.s, *conn_, rc_.websocket_idle_timeout, x_.ctx.buffers());
  conn_->close();  // an upgraded connection is never pooled
}

// The exchange is over (or failed): stops the upload if the response ended first.
void Exchange::stop() noexcept {
  stopping_ = true;
  if (pumping_ && !pump_sends_last_) {
    // The response is over (or failed) before the request: the rest of its body is not
    // wanted (RFC 9112 section 9.3, RFC 9113 section 8.1).
    x_.s.cancel_read();
    if (conn_ && !upload_done_) conn_->close();
  }
  wake_watchdog();
}

// After the children are done: pools the upstream exchange if both directions completed,
// else closes it.
void Exchange::release() noexcept {
  if (up_start_ != Clock::time_point{}) x_.upstream_ms = ms_since(up_start_);
  if (!conn_) return;
  if (response_done_ && upload_done_ && failure_.status == 0)
    pool_.release(*ep_, std::move(conn_));
  else
    conn_->close();
  conn_.reset();
}

// The one place a failure becomes the client's answer.
asio::awaitable<void> Exchange::answer_failure() {
  if (failure_.status == 499 || x_.client_gone) {
    x_.status = 499;  // nginx's "client closed request"
    co_return;
  }
  if (failure_.status < 0 || x_.s.response_started()) {
    x_.s.reset();
    co_return;
  }
  if (overflow_ != upstream::Overflow::None) {
    // Which limit, for clients and operators (Envoy says x-envoy-overloaded).
    const filters::HeaderList why{{"X-Turnpike-Overloaded", upstream::overflow_name(overflow_)}};
    co_await error_reply(x_, failure_.status, failure_.error, why);
  } else {
    co_await error_reply(x_, failure_.status, failure_.error, kNoHeaders);
  }
}

// ---- children -------------------------------------------------------------------------------

// The request body, client to upstream, while the main coroutine handles the response.
asio::awaitable<void> Exchange::upload() {
  auto buf = x_.ctx.buffers().get();
  const std::span<char> span(buf.get(), BufferPool::kSize);
  const auto limit = x_.filters ? x_.filters->ctx.max_body_bytes : std::nullopt;
  for (;;) {
    pump_waits_client_ = true;
    client_wait_since_ = Clock::now();
    // The watchdog may sleep until a later deadline, set while the client was not the one
    // waited for (the upload was sending, say): the client's body_timeout may come first.
    if (client_wait_since_ + x_.s.connection().body_timeout < watch_until_ &&
        !x_.s.response_started())
      wake_watchdog();
    const http::BodyRead r = co_await x_.s.read_body(span, kUnbounded);
    pump_waits_client_ = false;
    if (stopping_ || failure_.status != 0) break;
    if (r.ec) {
      const int status = downstream_status(r.ec);
      if (status == 0)
        client_gone();
      else
        fail(status, status == 413 ? "request body too large" : "bad request body");
      break;
    }
    if (r.bytes > 0) touch();
    body_bytes_ += r.bytes;
    if (limit && body_bytes_ > *limit) {
      fail(413, "request body too large");
      break;
    }
    const http::HeaderMap* trailers = r.last ? x_.s.request_trailers() : nullptr;
    pump_sends_last_ = r.last;
    error_code ec = co_await conn_->send_body(span.first(r.bytes), r.last && !trailers, kUnbounded);
    if (!ec && trailers) ec = co_await conn_->send_trailers(*trailers, kUnbounded);
    // The backend stopped taking the body: its response, if any, decides what the client gets.
    if (ec) break;
    touch();
    if (r.last) {
      upload_done_ = true;
      break;
    }
  }
  upload_ended_ = true;
  upload_ended_at_ = Clock::now();
  pumping_ = false;
  pump_sends_last_ = false;
  x_.ctx.buffers().put(std::move(buf));
  wake_watchdog();  // the response head's deadline starts now
}

// Bounds the exchange while the body streams: body inactivity either way (idle_timeout), a
// client stalling its body before any response (the listener's body_timeout), and the response
// head once the request has gone up (timeout).
asio::awaitable<void> Exchange::watchdog() {
  while (failure_.status == 0 && (pumping_ || !stopping_)) {
    const auto now = Clock::now();
    const bool client_turn = pump_waits_client_ && !x_.s.response_started();
    Clock::time_point when = last_activity_ + rc_.idle_timeout;
    int status = client_turn ? 408 : 504;
    std::string_view why = client_turn ? "request body timeout" : "upstream timed out";
    if (client_turn && client_wait_since_ + x_.s.connection().body_timeout < when) {
      when = client_wait_since_ + x_.s.connection().body_timeout;
    }
    if (!head_received_ && upload_ended_ && upload_ended_at_ + rc_.timeout < when) {
      when = upload_ended_at_ + rc_.timeout;
      status = 504;
      why = "upstream timed out";
    }
    if (now >= when) {
      if (!stopping_) {
        fail(status, why);
      } else if (conn_) {
        conn_->close();  // the body's last write is stuck: give up on it
      }
      break;
    }
    watch_until_ = when;
    timer_->expires_at(when);
    co_await timer_->async_wait(kAwait);
  }
}

}  // namespace turnpike::proxy
