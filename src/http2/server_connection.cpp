#include "http2/server_connection.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <optional>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>

#include "http2/header_block.h"
#include "support/spawn.h"
#include "turnpike/http/date.h"
#include "turnpike/http/path.h"

namespace turnpike::http2 {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kReadChunk = 16 * 1024;
constexpr std::size_t kOutMax = 64 * 1024;  // frames gathered into one write
constexpr auto kLinger = std::chrono::seconds(1);
constexpr auto kGoawayGrace = std::chrono::seconds(1);
// A complete response body up to this size is copied into the stream rather than waited on.
constexpr std::size_t kCopyFinalBody = 16 * 1024;

// One read buffer per worker thread for cleartext connections: filled and consumed by nghttp2
// between two suspensions, so connections never hold it while they wait.
char* worker_read_buffer() {
  thread_local std::unique_ptr<char[]> buf = std::make_unique<char[]>(kReadChunk);
  return buf.get();
}

bool body_forbidden(int status) {
  return (status >= 100 && status < 200) || status == 204 || status == 304;
}

// A token bucket refilled by elapsed time; false when empty.
bool take_token(double& tokens, Clock::time_point& last, double rate, double burst) {
  const auto now = Clock::now();
  tokens = std::min(burst, tokens + std::chrono::duration<double>(now - last).count() * rate);
  last = now;
  if (tokens < 1) return false;
  tokens -= 1;
  return true;
}

}  // namespace

// ---- one request stream ----------------------------------------------------------------------

class ServerConnection::Stream final : public http::ServerStream {
 public:
  Stream(ServerConnection& c, std::int32_t id) : conn_(c), id_(id) {
    head.protocol = http::Protocol::Http2;
    head.headers.reserve(16);
  }

  http::RequestHead& request() noexcept override { return head; }
  const http::ConnectionInfo& connection() const noexcept override { return conn_.info_; }
  asio::awaitable<http::BodyRead> read_body(std::span<char> out,
                                            std::chrono::milliseconds timeout) override;
  http::BodyRead read_buffered_body(std::span<char> out) override;
  const http::HeaderMap* request_trailers() const noexcept override {
    return in_done_ && !req_trailers_.empty() ? &req_trailers_ : nullptr;
  }
  void cancel_read() noexcept override {
    read_cancelled_ = true;
    wake();
  }
  asio::awaitable<error_code> send_response(http::ResponseHead& h, std::span<const char> body,
                                            bool end_stream) override;
  asio::awaitable<error_code> send_body(std::span<const char> body, bool end_stream) override;
  asio::awaitable<error_code> send_trailers(const http::HeaderMap& trailers) override;
  bool response_started() const noexcept override { return response_started_; }
  void reset() noexcept override { reset_with(NGHTTP2_INTERNAL_ERROR); }
  void set_observer(http::StreamObserver* o) noexcept override { observer_ = o; }
  // The client reset the stream (or the connection went) while the handler still needs it.
  void client_gone() noexcept {
    if (observer_ && reading_ && !response_done_ && !rst_sent_) {
      http::StreamObserver* o = observer_;
      observer_ = nullptr;
      o->on_client_reset();
    }
  }
  std::uint64_t bytes_received() const noexcept override { return rx_; }
  std::uint64_t bytes_sent() const noexcept override { return tx_; }

  void reset_with(std::uint32_t code) noexcept {
    pending_ = {};
    if (closed_ || conn_.closed_ || rst_sent_) return;
    rst_sent_ = true;
    nghttp2_submit_rst_stream(conn_.session_, NGHTTP2_FLAG_NONE, id_, code);
    conn_.signal_write();
    wake();
  }
  // Reading the request body and sending the response may wait at the same time (a WebSocket
  // tunnel does both), so each has its own event.
  void wake() noexcept {
    if (read_waiting_) read_event_->cancel();
    if (send_waiting_) send_event_->cancel();
  }
  // Waits for wake() or the deadline; false when the deadline passed. The events are made on
  // first use: most streams never wait (a timer costs a service lookup to make).
  asio::awaitable<bool> wait_until(Clock::time_point deadline, bool sending) {
    std::optional<asio::steady_timer>& event = sending ? send_event_ : read_event_;
    if (!event) event.emplace(conn_.write_event_.get_executor());
    asio::steady_timer& ev = *event;
    bool& waiting = sending ? send_waiting_ : read_waiting_;
    ev.expires_at(deadline);
    waiting = true;
    co_await ev.async_wait(kAwait);
    waiting = false;
    co_return Clock::now() < deadline;
  }
  // Waits until the codec has taken every pending response byte.
  asio::awaitable<error_code> drain_pending();
  // Request body bytes buffered and not yet handed to the handler.
  std::size_t unread() const noexcept { return in_.size() - in_off_; }
  // Submits the response head; `with_body`: a data provider follows with pending_ and eof_.
  int submit(const http::ResponseHead& h, bool with_body);
  static ssize_t read_data(nghttp2_session*, std::int32_t, std::uint8_t* buf, std::size_t length,
                           std::uint32_t* flags, nghttp2_data_source* source, void*);

  ServerConnection& conn_;
  const std::int32_t id_;
  std::optional<asio::steady_timer> read_event_;
  std::optional<asio::steady_timer> send_event_;
  http::RequestHead head;
  std::string scheme;
  std::string protocol;  // :protocol (extended CONNECT)
  std::string cookies;   // joined "; " (RFC 9113 section 8.2.3)
  std::uint64_t header_bytes = 0;
  std::uint32_t header_count = 0;
  bool too_large = false;
  bool headers_done = false;

  // Request body: DATA received and not yet read by the handler, bounded by the stream window
  // (bytes are returned to the window as the handler reads them).
  std::string in_;
  std::size_t in_off_ = 0;
  std::uint64_t in_total_ = 0;
  http::HeaderMap req_trailers_;
  bool in_done_ = false;
  bool body_too_large_ = false;
  bool reading_ = false;         // a handler runs and may read the body
  bool read_cancelled_ = false;  // the handler wants no more of the body

  // Response body: the handler's bytes the codec has not taken yet.
  std::span<const char> pending_;
  bool eof_ = false;
  std::string local_body_;     // codec-generated answers, small final bodies (copied)
  bool body_counted_ = false;  // local_body_'s bytes are in tx_ already
  http::HeaderMap trailers_;
  bool has_trailers_ = false;
  bool response_started_ = false;
  bool response_done_ = false;  // END_STREAM sent
  bool no_body_ = false;
  bool head_request_ = false;

  bool closed_ = false;  // nghttp2 closed the stream
  std::uint32_t close_code_ = 0;
  bool rst_sent_ = false;
  bool counted_reset_ = false;  // in conn_.reset_handlers_
  bool read_waiting_ = false;
  bool send_waiting_ = false;
  http::StreamObserver* observer_ = nullptr;
  std::uint64_t rx_ = 0;
  std::uint64_t tx_ = 0;
};

ssize_t ServerConnection::Stream::read_data(nghttp2_session*, std::int32_t, std::uint8_t* buf,
                                            std::size_t length, std::uint32_t* flags,
                                            nghttp2_data_source* source, void*) {
  auto* s = static_cast<Stream*>(source->ptr);
  const std::size_t n = std::min(length, s->pending_.size());
  if (n > 0) std::memcpy(buf, s->pending_.data(), n);
  s->pending_ = s->pending_.subspan(n);
  if (!s->body_counted_) s->tx_ += n;
  if (s->pending_.empty()) {
    if (s->eof_) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      if (s->has_trailers_) {
        HeaderBlock nva;
        nva.reserve(s->trailers_.size());
        s->tx_ += nva.add_fields(s->trailers_);
        if (nghttp2_submit_trailer(s->conn_.session_, s->id_, nva.data(), nva.size()) == 0)
          *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      }
    } else if (n == 0) {
      return NGHTTP2_ERR_DEFERRED;
    }
    s->wake();
  }
  return static_cast<ssize_t>(n);
}

int ServerConnection::Stream::submit(const http::ResponseHead& h, bool with_body) {
  char status[4];
  const int st = std::clamp(h.status, 100, 999);
  std::to_chars(status, status + 3, st);
  HeaderBlock nva;
  nva.reserve(h.headers.size() + 2);
  nva.add(":status", std::string_view(status, 3));
  tx_ += 9 + nva.add_fields(h.headers);
  std::string length;
  if (!body_forbidden(st)) {
    if (h.content_length) {
      length = std::to_string(*h.content_length);
    } else if (with_body && eof_ && !head_request_) {
      length = std::to_string(pending_.size());
    }
    if (!length.empty()) nva.add("content-length", length);
  }
  // Bytes sent, as HTTP/1.1 would count them (HPACK compresses them further).
  tx_ += 2 * nva.size() + 3 + (length.empty() ? 0 : 14 + length.size());
  nghttp2_data_provider prd;
  prd.source.ptr = this;
  prd.read_callback = &Stream::read_data;
  return nghttp2_submit_response(conn_.session_, id_, nva.data(), nva.size(),
                                 with_body ? &prd : nullptr);
}

asio::awaitable<error_code> ServerConnection::Stream::drain_pending() {
  auto deadline = Clock::now() + conn_.limits_.body_timeout;
  std::size_t left = pending_.size();
  while (!pending_.empty()) {
    if (closed_ || conn_.closed_ || rst_sent_) {
      pending_ = {};
      co_return asio::error::connection_reset;
    }
    const bool woken = co_await wait_until(deadline, true);
    if (!woken) {
      if (pending_.size() == left) {
        // The client kept its window closed for body_timeout: give up on this stream only.
        reset_with(NGHTTP2_CANCEL);
        co_return asio::error::timed_out;
      }
    }
    if (pending_.size() != left) {
      left = pending_.size();
      deadline = Clock::now() + conn_.limits_.body_timeout;
    }
  }
  co_return error_code{};
}

http::BodyRead ServerConnection::Stream::read_buffered_body(std::span<char> out) {
  http::BodyRead r;
  if (body_too_large_ || read_cancelled_) return r;
  if (unread() > 0) {
    const std::size_t n = std::min(out.size(), unread());
    std::memcpy(out.data(), in_.data() + in_off_, n);
    in_off_ += n;
    if (in_off_ == in_.size()) {
      in_.clear();
      in_off_ = 0;
    }
    if (!conn_.closed_) {
      // Return the bytes to the client's flow-control windows.
      if (closed_ || nghttp2_session_consume(conn_.session_, id_, n) != 0)
        nghttp2_session_consume_connection(conn_.session_, n);
      conn_.signal_write();
    }
    r.bytes = n;
  }
  r.last = in_done_ && unread() == 0;
  return r;
}

asio::awaitable<http::BodyRead> ServerConnection::Stream::read_body(
    std::span<char> out, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    http::BodyRead r;
    if (read_cancelled_) {
      r.ec = asio::error::operation_aborted;
      co_return r;
    }
    if (body_too_large_) {
      r.ec = boost::beast::http::error::body_limit;
      co_return r;
    }
    r = read_buffered_body(out);
    if (r.bytes > 0 || r.last) co_return r;
    if (closed_ || conn_.closed_ || rst_sent_) {
      r.ec = boost::beast::http::error::partial_message;
      co_return r;
    }
    const bool woken = co_await wait_until(deadline, false);
    if (!woken) {
      r.ec = asio::error::timed_out;
      co_return r;
    }
  }
}

asio::awaitable<error_code> ServerConnection::Stream::send_response(http::ResponseHead& h,
                                                                    std::span<const char> body,
                                                                    bool end_stream) {
  response_started_ = true;
  if (closed_ || conn_.closed_ || rst_sent_) co_return asio::error::connection_reset;
  no_body_ = head_request_ || body_forbidden(h.status) || !h.has_body;
  if (no_body_ || (end_stream && body.empty())) {
    if (no_body_ && !end_stream) {
      // The handler may still send (and we drop) body bytes; end the stream now regardless.
    }
    eof_ = true;
    pending_ = {};
    if (submit(h, false) != 0) co_return asio::error::connection_reset;
    conn_.signal_write();
    co_return error_code{};
  }
  const bool copied = end_stream && body.size() <= kCopyFinalBody;
  if (copied) {
    // A small complete response is copied, so the handler does not wait for the writer.
    local_body_.assign(body.data(), body.size());
    body = local_body_;
    tx_ += body.size();  // counted now: the access log line may be written before it is sent
    body_counted_ = true;
  }
  pending_ = body;
  eof_ = end_stream;
  if (submit(h, true) != 0) {
    pending_ = {};
    co_return asio::error::connection_reset;
  }
  conn_.signal_write();
  if (copied) co_return error_code{};
  co_return co_await drain_pending();
}

asio::awaitable<error_code> ServerConnection::Stream::send_body(std::span<const char> body,
                                                                bool end_stream) {
  if (closed_ || conn_.closed_ || rst_sent_) co_return asio::error::connection_reset;
  if (no_body_ || eof_) co_return error_code{};
  pending_ = body;
  eof_ = end_stream;
  nghttp2_session_resume_data(conn_.session_, id_);
  conn_.signal_write();
  co_return co_await drain_pending();
}

asio::awaitable<error_code> ServerConnection::Stream::send_trailers(
    const http::HeaderMap& trailers) {
  if (closed_ || conn_.closed_ || rst_sent_) co_return asio::error::connection_reset;
  if (no_body_ || eof_) co_return error_code{};
  trailers_ = trailers;
  has_trailers_ = true;
  pending_ = {};
  eof_ = true;
  nghttp2_session_resume_data(conn_.session_, id_);
  conn_.signal_write();
  co_return error_code{};
}

// ---- nghttp2 callbacks -------------------------------------------------------------------

struct ServerConnection::Callbacks {
  static ServerConnection& self(void* user) { return *static_cast<ServerConnection*>(user); }
  static Stream* stream(nghttp2_session* session, std::int32_t id) {
    return static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, id));
  }

  static int on_begin_frame(nghttp2_session*, const nghttp2_frame_hd* hd, void* user) {
    return self(user).on_begin_frame(hd->type, hd->flags, hd->length);
  }

  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    return self(user).on_begin_headers(frame->hd.stream_id);
  }

  static int on_header(nghttp2_session* session, const nghttp2_frame* frame,
                       const std::uint8_t* name_p, std::size_t namelen, const std::uint8_t* value_p,
                       std::size_t valuelen, std::uint8_t, void* user) {
    Stream* s = stream(session, frame->hd.stream_id);
    if (!s) return 0;
    ServerConnection& c = self(user);
    s->header_bytes += namelen + valuelen + 32;
    s->rx_ += namelen + valuelen + 2;
    if (s->header_bytes > c.limits_.max_header_bytes || ++s->header_count > c.limits_.max_headers)
      s->too_large = true;
    if (s->too_large) return 0;  // over the limit: answered 431, or the trailers dropped
    const std::string_view name(reinterpret_cast<const char*>(name_p), namelen);
    const std::string_view value(reinterpret_cast<const char*>(value_p), valuelen);
    if (s->headers_done) {  // trailers (nghttp2 refused pseudo-headers in them)
      if (http::trailer_allowed(name)) s->req_trailers_.add(name, value);
      return 0;
    }
    http::RequestHead& h = s->head;
    if (!name.empty() && name[0] == ':') {
      if (name == ":method")
        h.method = value;
      else if (name == ":path")
        h.target = value;
      else if (name == ":authority")
        h.authority = value;
      else if (name == ":scheme")
        s->scheme = value;
      else if (name == ":protocol")
        s->protocol = value;
      return 0;
    }
    if (name == "cookie") {
      if (!s->cookies.empty()) s->cookies += "; ";
      s->cookies += value;
      return 0;
    }
    if (name == "content-length") {
      std::uint64_t n = 0;
      std::from_chars(value.data(), value.data() + value.size(), n);  // nghttp2 checked it
      h.content_length = n;
      return 0;
    }
    if (name == "host") {
      if (h.authority.empty()) h.authority = value;
      return 0;  // :authority wins; the Host sent upstream is rebuilt from it
    }
    if (name == "te") return 0;  // "trailers" only (nghttp2 checked); hop-by-hop
    h.headers.add(name, value);
    return 0;
  }

  // Stricter than nghttp2's default, which drops fields with invalid characters silently: a
  // request with one is malformed (stream error), as RFC 9113 section 8.2.1 says.
  static int on_invalid_header(nghttp2_session*, const nghttp2_frame*, const std::uint8_t*,
                               std::size_t, const std::uint8_t*, std::size_t, std::uint8_t, void*) {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }

  static int on_frame_recv(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    Stream* s = stream(session, frame->hd.stream_id);
    if (!s) return 0;
    const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS:
        if (!s->headers_done) {
          s->headers_done = true;
          self(user).on_headers_done(*s, end_stream);
        } else if (end_stream) {  // trailers
          s->in_done_ = true;
          s->wake();
        }
        break;
      case NGHTTP2_DATA:
        if (end_stream) {
          s->in_done_ = true;
          s->wake();
        }
        break;
      default:
        break;
    }
    return 0;
  }

  static int on_data_chunk(nghttp2_session* session, std::uint8_t, std::int32_t id,
                           const std::uint8_t* data, std::size_t len, void* user) {
    ServerConnection& c = self(user);
    Stream* s = stream(session, id);
    if (!s || !s->reading_ || s->response_done_ || s->read_cancelled_) {
      // Nobody will read it: give the window back now.
      nghttp2_session_consume(session, id, len);
      return 0;
    }
    s->rx_ += len;
    s->in_total_ += len;
    if (c.limits_.max_body_bytes && s->in_total_ > *c.limits_.max_body_bytes) {
      s->body_too_large_ = true;
      nghttp2_session_consume(session, id, len + s->unread());
      s->in_.clear();
      s->in_off_ = 0;
      s->wake();
      return 0;
    }
    if (s->in_off_ > 0 && s->in_off_ >= s->in_.size() / 2) {
      s->in_.erase(0, s->in_off_);
      s->in_off_ = 0;
    }
    s->in_.append(reinterpret_cast<const char*>(data), len);
    s->wake();
    return 0;
  }

  static int on_frame_send(nghttp2_session* session, const nghttp2_frame* frame, void*) {
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
      return 0;
    Stream* s = stream(session, frame->hd.stream_id);
    if (!s) return 0;
    s->response_done_ = true;
    // The response is complete before the request: tell the client to stop sending (RFC 9113
    // section 8.1), and give back what it already sent.
    if (!s->in_done_ && !s->closed_ && !s->rst_sent_) {
      s->rst_sent_ = true;
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    }
    s->wake();
    return 0;
  }

  static int on_stream_close(nghttp2_session* session, std::int32_t id, std::uint32_t code,
                             void* user) {
    ServerConnection& c = self(user);
    Stream* s = stream(session, id);
    if (!s) return 0;
    s->closed_ = true;
    s->close_code_ = code;
    if (code != NGHTTP2_NO_ERROR && s->reading_ && !s->counted_reset_) {
      s->counted_reset_ = true;
      ++c.reset_handlers_;
    }
    if (const std::size_t left = s->unread()) nghttp2_session_consume_connection(session, left);
    s->in_.clear();
    s->in_off_ = 0;
    s->pending_ = {};
    s->wake();
    s->client_gone();
    nghttp2_session_set_stream_user_data(session, id, nullptr);
    c.streams_.erase(id);  // the handler, if any, keeps its own reference
    return 0;
  }

  static int on_error(nghttp2_session*, int, const char* msg, std::size_t len, void* user) {
    ServerConnection& c = self(user);
    spdlog::debug("h2 connection from {}: {}", c.info_.client_address, std::string_view(msg, len));
    return 0;
  }
};

// ---- the connection ----------------------------------------------------------------------

ServerConnection::ServerConnection(tcp::socket&& socket, std::string initial,
                                   const http::ServerLimits& limits, const ServerSettings& settings,
                                   http::ConnectionInfo info, http::StreamHandler& handler,
                                   http::ConnectionRegistry& registry)
    : socket_(std::move(socket)),
      initial_(std::move(initial)),
      limits_(limits),
      settings_(settings),
      info_(std::move(info)),
      handler_(handler),
      registry_(registry),
      deadline_(socket_.get_executor()),
      write_deadline_(socket_.get_executor()),
      write_event_(socket_.get_executor()),
      goaway_timer_(socket_.get_executor()),
      control_tokens_(settings_.max_control_frames_burst),
      control_refill_(Clock::now()),
      reset_tokens_(settings_.max_resets_burst),
      reset_refill_(Clock::now()) {
  info_.body_timeout = limits_.body_timeout;
  registry_.add(this, info_.listener_id);
}

ServerConnection::ServerConnection(std::unique_ptr<TlsStream> tls, const http::ServerLimits& limits,
                                   const ServerSettings& settings, http::ConnectionInfo info,
                                   http::StreamHandler& handler, http::ConnectionRegistry& registry)
    : ServerConnection(tcp::socket(tls->get_executor()), {}, limits, settings, std::move(info),
                       handler, registry) {
  tls_ = std::move(tls);
}

ServerConnection::~ServerConnection() {
  if (session_) nghttp2_session_del(session_);
  registry_.remove(this);
}

void ServerConnection::init_session() {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, &Callbacks::on_begin_frame);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &Callbacks::on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &Callbacks::on_header);
  nghttp2_session_callbacks_set_on_invalid_header_callback(cbs, &Callbacks::on_invalid_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &Callbacks::on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &Callbacks::on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &Callbacks::on_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &Callbacks::on_stream_close);
  nghttp2_session_callbacks_set_error_callback2(cbs, &Callbacks::on_error);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  // Windows are returned as the handler reads, so a request body is buffered only up to them.
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_no_closed_streams(opt, 1);
  nghttp2_option_set_max_continuations(opt, settings_.max_continuations);
  // Our own reset bucket (on_begin_frame) answers ENHANCE_YOUR_CALM first; nghttp2's is a
  // backstop.
  nghttp2_option_set_stream_reset_rate_limit(opt, 2ull * settings_.max_resets_burst,
                                             2ull * settings_.max_resets_per_second);
  nghttp2_session_server_new2(&session_, cbs, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);

  const nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, settings_.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, settings_.initial_window_size},
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, settings_.max_frame_size},
      {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, settings_.header_table_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
       static_cast<std::uint32_t>(std::min<std::uint64_t>(limits_.max_header_bytes, UINT32_MAX))},
      {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
      {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},  // WebSocket over HTTP/2 (RFC 8441)
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, std::size(iv));
  nghttp2_session_set_local_window_size(
      session_, NGHTTP2_FLAG_NONE, 0, static_cast<std::int32_t>(settings_.connection_window_size));
}

void ServerConnection::start() {
  auto bind_cancel = [this](support::Deadline& d) {
    d.bind([this] {
      error_code ignored;
      lowest().cancel(ignored);
    });
  };
  bind_cancel(deadline_);
  bind_cancel(write_deadline_);
  asio::co_spawn(lowest().get_executor(), run(), [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::error("h2 connection: unexpected exception: {}", ex.what());
    }
  });
}

int ServerConnection::on_begin_frame(std::uint8_t type, std::uint8_t flags, std::size_t length) {
  received_frame_ = true;
  const auto calm = [this](std::string_view why) {
    terminate(NGHTTP2_ENHANCE_YOUR_CALM, why);
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  };
  switch (type) {
    case NGHTTP2_DATA:
    case NGHTTP2_HEADERS:
    case NGHTTP2_CONTINUATION: {
      const bool ends = (type == NGHTTP2_DATA && (flags & NGHTTP2_FLAG_END_STREAM)) ||
                        (type != NGHTTP2_DATA && (flags & NGHTTP2_FLAG_END_HEADERS));
      if (length == 0 && !ends) {
        if (++empty_run_ > settings_.max_empty_frames) return calm("flood of empty frames");
      } else if (length > 0) {
        empty_run_ = 0;
      }
      if (type != NGHTTP2_DATA) {
        in_header_block_ = !(flags & NGHTTP2_FLAG_END_HEADERS);
        if (in_header_block_ && type == NGHTTP2_HEADERS) header_block_start_ = Clock::now();
      }
      break;
    }
    case NGHTTP2_SETTINGS:
    case NGHTTP2_PING:
      if (flags & NGHTTP2_FLAG_ACK) break;
      [[fallthrough]];
    case NGHTTP2_PRIORITY:
      if (!take_token(control_tokens_, control_refill_, settings_.max_control_frames_per_second,
                      settings_.max_control_frames_burst))
        return calm("flood of SETTINGS/PING/PRIORITY frames");
      break;
    case NGHTTP2_RST_STREAM:
      if (!take_token(reset_tokens_, reset_refill_, settings_.max_resets_per_second,
                      settings_.max_resets_burst))
        return calm("stream resets over the limit (rapid reset)");
      break;
    default:
      break;
  }
  return 0;
}

int ServerConnection::on_begin_headers(std::int32_t stream_id) {
  // nghttp2 counts open streams; a stream the client reset may still have its handler working
  // upstream, so the cap applies to those handlers too (rapid reset cannot pile up work).
  if (streams_.size() + reset_handlers_ >= settings_.max_concurrent_streams || draining_) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_REFUSED_STREAM);
    if (!take_token(reset_tokens_, reset_refill_, settings_.max_resets_per_second,
                    settings_.max_resets_burst)) {
      terminate(NGHTTP2_ENHANCE_YOUR_CALM, "streams refused over the limit");
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
  }
  auto s = std::make_shared<Stream>(*this, stream_id);
  nghttp2_session_set_stream_user_data(session_, stream_id, s.get());
  streams_.emplace(stream_id, std::move(s));
  return 0;
}

void ServerConnection::on_headers_done(Stream& s, bool end_stream) {
  http::RequestHead& h = s.head;
  s.in_done_ = end_stream;
  h.has_body = !end_stream;
  s.head_request_ = h.method == "HEAD";
  if (!s.cookies.empty()) h.headers.add("cookie", s.cookies);
  int status = 0;
  std::string_view why;
  if (s.too_large) {
    status = 431, why = "request header list too large";
  } else if (h.method == "CONNECT" && s.protocol != "websocket") {
    status = 501, why = s.protocol.empty() ? "CONNECT is not supported"
                                           : "extended CONNECT supports websocket only";
  } else if (auto split = http::normalize_target(h.target)) {
    if (h.method == "CONNECT") {
      // RFC 8441: a WebSocket; routed and sent upstream like an HTTP/1.1 upgrade (GET).
      h.upgrade = s.protocol;
      h.method = "GET";
    }
    h.path = std::move(split->path);
    h.query = std::move(split->query);
  } else {
    status = 400, why = "invalid :path";
  }
  if (status == 0 && h.target.size() > limits_.max_uri_bytes) {
    status = 414, why = "request-target too long";
  }
  h.host = http::normalize_host(h.authority);
  // HTTP/1.1 upstreams need Host; :authority is what the client named.
  if (!h.authority.empty()) h.headers.add("host", h.authority);
  if (status != 0) {
    const std::string* ct = h.headers.get("content-type");
    if (ct && ct->starts_with("application/grpc")) {
      // A gRPC client gets its status in trailers-only form, never a JSON body.
      handler_.on_rejected(info_, h, status, why, s.rx_, 0);
      http::ResponseHead resp;
      resp.headers.add("content-type", "application/grpc");
      resp.headers.add("grpc-status", std::to_string(http::grpc_status_for(status)));
      resp.headers.add("grpc-message", why);
      s.response_started_ = true;
      s.no_body_ = true;
      s.eof_ = true;
      s.submit(resp, false);
      signal_write();
      return;
    }
    std::string body = R"({"error":")";
    body += http::reason_phrase(status);
    body += "\"}";
    handler_.on_rejected(info_, h, status, why, s.rx_, body.size());
    s.local_body_ = std::move(body);
    http::ResponseHead resp;
    resp.status = status;
    resp.headers.add("date", http::http_date_now());
    resp.headers.add("content-type", "application/json");
    s.response_started_ = true;
    s.pending_ = s.local_body_;
    s.eof_ = true;
    s.submit(resp, true);
    signal_write();
    return;
  }
  s.reading_ = true;
  ++handlers_;
  auto it = streams_.find(s.id_);
  asio::co_spawn(lowest().get_executor(), serve_stream(it->second),
                 support::log_exception("h2 stream", [w = weak_from_this()] {
                   if (auto c = w.lock()) c->close();
                 }));
}

asio::awaitable<void> ServerConnection::serve_stream(std::shared_ptr<Stream> sp) {
  auto self = shared_from_this();
  Stream& s = *sp;
  try {
    co_await handler_.serve(s);
  } catch (const std::exception& e) {
    spdlog::error("h2 stream: unexpected exception: {}", e.what());
    s.reset();
  }
  s.reading_ = false;
  if (s.counted_reset_) {
    s.counted_reset_ = false;
    --reset_handlers_;
  }
  if (!s.response_started_) {
    s.reset();
  } else if (!s.eof_ && !s.no_body_) {
    s.reset();  // the handler gave up mid-response
  }
  // Body bytes the handler left unread go back to the window (the stream is being closed).
  if (const std::size_t left = s.unread(); left && !closed_) {
    if (s.closed_ || nghttp2_session_consume(session_, s.id_, left) != 0)
      nghttp2_session_consume_connection(session_, left);
    s.in_.clear();
    s.in_off_ = 0;
  }
  --handlers_;
  // The last request ended while the reader waits without a deadline (it had requests in
  // flight): the connection is idle from now, so its idle timeout starts now.
  if (handlers_ == 0 && !in_header_block_ && !terminated_ && !writer_done_ && !closed_)
    deadline_.expires_after(limits_.idle_timeout);
  signal_write();
}

void ServerConnection::receive(const char* data, std::size_t n) {
  const auto rv =
      nghttp2_session_mem_recv(session_, reinterpret_cast<const std::uint8_t*>(data), n);
  if (rv < 0 && !terminated_) {
    std::uint32_t code = NGHTTP2_INTERNAL_ERROR;
    if (rv == NGHTTP2_ERR_FLOODED || rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS)
      code = NGHTTP2_ENHANCE_YOUR_CALM;
    else if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC || rv == NGHTTP2_ERR_PROTO)
      code = NGHTTP2_PROTOCOL_ERROR;
    terminate(code, nghttp2_strerror(static_cast<int>(rv)));
  }
  signal_write();
}

void ServerConnection::terminate(std::uint32_t error_code, std::string_view why) noexcept {
  if (terminated_ || closed_) return;
  terminated_ = true;
  spdlog::info("h2 connection from {} on {}: GOAWAY {} ({})", info_.client_address, info_.listener,
               nghttp2_http2_strerror(error_code), why);
  nghttp2_session_terminate_session(session_, error_code);
  signal_write();
}

void ServerConnection::signal_write() noexcept {
  write_wake_ = true;
  if (writer_waiting_) write_event_.cancel();
}

bool ServerConnection::session_over() const noexcept {
  return !nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_);
}

void ServerConnection::send_final_goaway() noexcept {
  if (closed_ || terminated_) return;
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  signal_write();
}

void ServerConnection::shutdown_when_idle() noexcept {
  if (draining_ || closed_) return;
  draining_ = true;
  if (!session_) {
    close();
    return;
  }
  if (handlers_ == 0 && streams_.empty()) {
    send_final_goaway();
    return;
  }
  // Announce the shutdown, give requests already in flight a moment to arrive, then send the
  // GOAWAY that names the last stream served; open streams finish.
  nghttp2_submit_shutdown_notice(session_);
  signal_write();
  goaway_timer_.expires_after(kGoawayGrace);
  goaway_timer_.async_wait([weak = weak_from_this()](const error_code& ec) {
    if (ec) return;
    if (auto self = weak.lock()) self->send_final_goaway();
  });
}

void ServerConnection::abort() noexcept {
  close();
}

void ServerConnection::close() noexcept {
  if (closed_) return;
  closed_ = true;
  deadline_.cancel();
  write_deadline_.cancel();
  goaway_timer_.cancel();
  write_event_.cancel();
  error_code ignored;
  lowest().shutdown(tcp::socket::shutdown_both, ignored);
  lowest().close(ignored);
  for (auto& [id, s] : streams_) {
    s->closed_ = true;
    s->pending_ = {};
    s->wake();
    s->client_gone();
  }
  streams_.clear();
}

asio::awaitable<void> ServerConnection::run() {
  auto self = shared_from_this();
  init_session();
  asio::co_spawn(lowest().get_executor(), write_loop(),
                 support::log_exception("h2 writer", [w = weak_from_this()] {
                   if (auto c = w.lock()) c->close();
                 }));
  if (!initial_.empty()) {
    receive(initial_.data(), initial_.size());
    std::string().swap(initial_);
  }
  // Cleartext reads wait until the socket is readable and then read into the worker's buffer,
  // which nghttp2 consumes before the next wait: an idle connection holds no read buffer. (TLS
  // reads go through the stream's own buffers, so they keep one of their own.)
  std::unique_ptr<char[]> tls_buf;
  if (tls_) tls_buf = std::make_unique<char[]>(kReadChunk);
  error_code nb_ec;
  if (!tls_) socket_.non_blocking(true, nb_ec);
  bool lingering = false;
  while (!closed_) {
    if (!lingering && (writer_done_ || !nghttp2_session_want_read(session_))) {
      // GOAWAY is out (or going): read and drop what the client still sends for a moment, so
      // closing with unread data does not reset the connection before it reads the GOAWAY.
      lingering = true;
      deadline_.expires_after(kLinger);
    } else if (!lingering) {
      if (in_header_block_)
        deadline_.expires_at(header_block_start_ + limits_.header_timeout);
      else if (!received_frame_)
        deadline_.expires_after(limits_.header_timeout);
      else if (handlers_ == 0)
        deadline_.expires_after(limits_.idle_timeout);
      else
        deadline_.clear();
    }
    error_code ec;
    std::size_t n = 0;
    char* buf = tls_buf.get();
    if (tls_) {
      std::tie(ec, n) = co_await tls_->async_read_some(asio::buffer(buf, kReadChunk), kAwait);
    } else {
      std::tie(ec) = co_await socket_.async_wait(tcp::socket::wait_read, kAwait);
      if (!ec && !closed_) {
        buf = worker_read_buffer();
        n = socket_.read_some(asio::buffer(buf, kReadChunk), ec);
        if (ec == asio::error::would_block) continue;
      }
    }
    if (closed_) break;
    if (ec) {
      if (!lingering && deadline_.expired() && !in_header_block_ && received_frame_ &&
          handlers_ == 0) {
        // Idle: say goodbye properly, then linger.
        send_final_goaway();
        if (!terminated_) terminated_ = true;
        continue;
      }
      break;
    }
    if (!lingering && !terminated_) receive(buf, n);
  }
  close();
}

asio::awaitable<void> ServerConnection::write_loop() {
  auto self = shared_from_this();
  while (!closed_) {
    write_wake_ = false;
    if (const int rv = append_frames(session_, out_, kOutMax); rv < 0) {
      spdlog::debug("h2 connection from {}: {}", info_.client_address, nghttp2_strerror(rv));
      close();
    }
    if (closed_) break;
    if (out_.empty()) {
      if (session_over()) break;
      // Nothing to send: do not keep a large response's buffer while waiting.
      if (out_.capacity() > kReadChunk) std::string().swap(out_);
      if (!write_wake_) {
        writer_waiting_ = true;
        write_event_.expires_at(Clock::time_point::max());
        co_await write_event_.async_wait(kAwait);
        writer_waiting_ = false;
      }
      continue;
    }
    write_deadline_.expires_after(limits_.body_timeout);
    error_code ec;
    std::size_t n = 0;
    if (tls_)
      std::tie(ec, n) = co_await asio::async_write(*tls_, asio::buffer(out_), kAwait);
    else
      std::tie(ec, n) = co_await asio::async_write(socket_, asio::buffer(out_), kAwait);
    write_deadline_.clear();
    if (ec) {
      close();
      break;
    }
    out_.clear();
  }
  writer_done_ = true;
  if (!closed_) {
    error_code ignored;
    lowest().shutdown(tcp::socket::shutdown_send, ignored);
    deadline_.expires_after(kLinger);
  }
}

}  // namespace turnpike::http2
