#include "http2/client_connection.h"

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

namespace turnpike::http2 {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kReadChunk = 16 * 1024;
constexpr std::size_t kOutMax = 64 * 1024;
constexpr std::size_t kMaxResponseHeaderBytes = 64 * 1024;
// Interim (1xx) responses skipped before the final one; more is a hostile backend.
constexpr int kMaxInterim = 16;

}  // namespace

// ---- one exchange --------------------------------------------------------------------------

class ClientConnection::Stream final : public http::ClientStream {
 public:
  explicit Stream(std::shared_ptr<ClientConnection> c) : conn_(std::move(c)) { ++conn_->streams_; }
  ~Stream() override {
    abandon(NGHTTP2_CANCEL);
    if (id_ > 0) {
      conn_->by_id_.erase(id_);
      if (!conn_->closed_) {
        nghttp2_session_set_stream_user_data(conn_->session_, id_, nullptr);
        if (const std::size_t left = unread()) {
          nghttp2_session_consume_connection(conn_->session_, left);
          conn_->signal_write();
        }
      }
    }
    if (complete()) ++conn_->served_;
    conn_->stream_done();
  }

  asio::awaitable<error_code> send_request(const http::RequestHead& head,
                                           std::string_view path_and_query,
                                           std::span<const char> body, bool end_stream,
                                           std::chrono::milliseconds timeout) override;
  asio::awaitable<error_code> send_body(std::span<const char> body, bool end_stream,
                                        std::chrono::milliseconds timeout) override;
  asio::awaitable<error_code> send_trailers(const http::HeaderMap& trailers,
                                            std::chrono::milliseconds timeout) override;
  asio::awaitable<error_code> read_response_head(http::ResponseHead& head, bool head_request,
                                                 std::chrono::milliseconds timeout) override;
  http::BodyRead read_buffered_body(std::span<char> out) override;
  asio::awaitable<http::BodyRead> read_body(std::span<char> out,
                                            std::chrono::milliseconds timeout) override;
  const http::HeaderMap* trailers() const noexcept override {
    return has_trailers_ ? &trailers_ : nullptr;
  }
  std::uint64_t response_bytes() const noexcept override { return rx_; }
  bool refused() const noexcept override {
    return closed_ && close_code_ == NGHTTP2_REFUSED_STREAM && !headers_done_;
  }
  void close() noexcept override { abandon(NGHTTP2_CANCEL); }

  bool complete() const noexcept { return closed_ && in_done_ && close_code_ == 0; }
  std::size_t unread() const noexcept { return in_.size() - in_off_; }
  // The request (sending) and the response (reading) may wait at the same time, each on its
  // own event.
  void wake() noexcept {
    if (read_waiting_) read_event_->cancel();
    if (send_waiting_) send_event_->cancel();
  }
  // The events are made on first use (a timer costs a service lookup to make).
  asio::awaitable<bool> wait_until(Clock::time_point deadline, bool sending) {
    std::optional<asio::steady_timer>& event = sending ? send_event_ : read_event_;
    if (!event) event.emplace(conn_->write_event_.get_executor());
    asio::steady_timer& ev = *event;
    bool& waiting = sending ? send_waiting_ : read_waiting_;
    ev.expires_at(deadline);
    waiting = true;
    co_await ev.async_wait(kAwait);
    waiting = false;
    co_return Clock::now() < deadline;
  }
  error_code failure() const noexcept {
    if (conn_->closed_ && conn_->error_) return conn_->error_;
    return asio::error::connection_reset;
  }
  bool broken() const noexcept {
    return conn_->closed_ || (closed_ && !in_done_) || rst_sent_ || abandoned_;
  }
  void abandon(std::uint32_t code) noexcept {
    pending_ = {};
    abandoned_ = true;
    wake();  // whatever this exchange waits on fails now
    if (id_ <= 0 || closed_ || rst_sent_ || conn_->closed_) return;
    rst_sent_ = true;
    nghttp2_submit_rst_stream(conn_->session_, NGHTTP2_FLAG_NONE, id_, code);
    conn_->signal_write();
  }
  asio::awaitable<error_code> drain_pending(std::chrono::milliseconds timeout);
  http::BodyRead take(std::span<char> out);

  std::shared_ptr<ClientConnection> conn_;
  std::optional<asio::steady_timer> read_event_;
  std::optional<asio::steady_timer> send_event_;
  std::int32_t id_ = 0;
  // Request body: the proxy's bytes nghttp2 has not taken yet.
  std::span<const char> pending_;
  bool eof_ = false;
  http::HeaderMap req_trailers_;  // sent when the body ends (send_trailers)
  bool has_req_trailers_ = false;
  // Response.
  int status_ = 0;
  http::HeaderMap headers_;
  http::HeaderMap trailers_;
  bool has_trailers_ = false;
  std::optional<std::uint64_t> content_length_;
  std::uint64_t header_bytes_ = 0;
  bool headers_done_ = false;
  bool head_end_stream_ = false;  // the final response head ended the stream: no body
  int interim_ = 0;
  std::string in_;
  std::size_t in_off_ = 0;
  bool in_done_ = false;
  bool closed_ = false;
  std::uint32_t close_code_ = 0;
  bool rst_sent_ = false;
  bool abandoned_ = false;
  bool read_waiting_ = false;
  bool send_waiting_ = false;
  std::uint64_t rx_ = 0;
};

asio::awaitable<error_code> ClientConnection::Stream::drain_pending(
    std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  std::size_t left = pending_.size();
  while (!pending_.empty()) {
    if (broken()) {
      pending_ = {};
      co_return failure();
    }
    const bool woken = co_await wait_until(deadline, true);
    if (!woken && pending_.size() == left) {
      abandon(NGHTTP2_CANCEL);
      co_return asio::error::timed_out;
    }
    if (pending_.size() != left) {
      left = pending_.size();
      deadline = Clock::now() + timeout;
    }
  }
  co_return error_code{};
}

asio::awaitable<error_code> ClientConnection::Stream::send_request(
    const http::RequestHead& head, std::string_view path_and_query, std::span<const char> body,
    bool end_stream, std::chrono::milliseconds timeout) {
  const error_code ready = co_await conn_->wait_ready(Clock::now() + timeout);
  if (ready) co_return ready;
  if (conn_->closed_ || abandoned_) co_return failure();
  ClientConnection& c = *conn_;
  const std::string* host = head.headers.get("host");
  std::string_view authority = host ? std::string_view(*host) : std::string_view(head.authority);
  HeaderBlock nva;
  nva.reserve(head.headers.size() + 6);
  nva.add(":method", head.method);
  nva.add(":scheme", c.tls_used_ ? "https" : "http");
  nva.add(":authority", authority);
  nva.add(":path", path_and_query);
  nva.add_fields(head.headers, {"host", "expect"});  // Host is :authority
  // gRPC servers insist on it (RFC 9113 allows "trailers" as the only TE value).
  const std::string* ct = head.headers.get("content-type");
  if (ct && ct->starts_with("application/grpc")) nva.add("te", "trailers");
  std::string length;
  if (head.content_length) {
    length = std::to_string(*head.content_length);
    nva.add("content-length", length);
  }
  pending_ = body;
  eof_ = end_stream;
  nghttp2_data_provider prd;
  prd.source.ptr = conn_.get();
  prd.read_callback = [](nghttp2_session* session, std::int32_t id, std::uint8_t* buf,
                         std::size_t len, std::uint32_t* flags, nghttp2_data_source*,
                         void*) -> ssize_t {
    auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, id));
    if (!s) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // abandoned: reset
    const std::size_t n = std::min(len, s->pending_.size());
    if (n > 0) std::memcpy(buf, s->pending_.data(), n);
    s->pending_ = s->pending_.subspan(n);
    if (s->pending_.empty()) {
      if (s->eof_) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (s->has_req_trailers_) {
          HeaderBlock tva;
          tva.reserve(s->req_trailers_.size());
          tva.add_fields(s->req_trailers_);
          if (nghttp2_submit_trailer(session, id, tva.data(), tva.size()) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
      } else if (n == 0) {
        return NGHTTP2_ERR_DEFERRED;
      }
      s->wake();
    }
    return static_cast<ssize_t>(n);
  };
  const bool no_body = end_stream && body.empty();
  const std::int32_t id = nghttp2_submit_request(c.session_, nullptr, nva.data(), nva.size(),
                                                 no_body ? nullptr : &prd, this);
  if (id < 0) {
    pending_ = {};
    c.going_away_ = true;  // stream ids exhausted, say: use a new connection from now on
    co_return asio::error::connection_refused;
  }
  id_ = id;
  c.by_id_.emplace(id, this);
  c.signal_write();
  co_return co_await drain_pending(timeout);
}

asio::awaitable<error_code> ClientConnection::Stream::send_body(std::span<const char> body,
                                                                bool end_stream,
                                                                std::chrono::milliseconds timeout) {
  if (broken()) co_return failure();
  if (eof_) co_return error_code{};
  pending_ = body;
  eof_ = end_stream;
  nghttp2_session_resume_data(conn_->session_, id_);
  conn_->signal_write();
  co_return co_await drain_pending(timeout);
}

asio::awaitable<error_code> ClientConnection::Stream::send_trailers(
    const http::HeaderMap& trailers, std::chrono::milliseconds timeout) {
  if (broken()) co_return failure();
  if (eof_) co_return error_code{};
  req_trailers_ = trailers;
  has_req_trailers_ = true;
  co_return co_await send_body(std::span<const char>(), true, timeout);
}

asio::awaitable<error_code> ClientConnection::Stream::read_response_head(
    http::ResponseHead& head, bool head_request, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!headers_done_) {
    if (interim_ > kMaxInterim) {
      abandon(NGHTTP2_PROTOCOL_ERROR);
      co_return boost::beast::http::error::bad_status;
    }
    if (broken()) co_return failure();
    const bool woken = co_await wait_until(deadline, false);
    if (!woken && !headers_done_) {
      abandon(NGHTTP2_CANCEL);
      co_return asio::error::timed_out;
    }
  }
  head.status = status_;
  head.reason.clear();
  head.headers = std::move(headers_);
  head.content_length = content_length_;
  const bool forbidden = status_ == 204 || status_ == 304;
  // A body (or trailers) follows unless the head ended the stream: a response of HEADERS and
  // trailers only has a body of no bytes, and its trailers still reach the client.
  head.has_body = !head_request && !forbidden && !head_end_stream_;
  co_return error_code{};
}

http::BodyRead ClientConnection::Stream::take(std::span<char> out) {
  http::BodyRead r;
  const std::size_t n = std::min(out.size(), unread());
  if (n > 0) {
    std::memcpy(out.data(), in_.data() + in_off_, n);
    in_off_ += n;
    if (in_off_ == in_.size()) {
      in_.clear();
      in_off_ = 0;
    }
    if (!conn_->closed_) {
      if (closed_ || nghttp2_session_consume(conn_->session_, id_, n) != 0)
        nghttp2_session_consume_connection(conn_->session_, n);
      conn_->signal_write();
    }
  }
  r.bytes = n;
  r.last = in_done_ && unread() == 0;
  if (!r.last && unread() == 0 && broken() && n == 0) r.ec = failure();
  return r;
}

http::BodyRead ClientConnection::Stream::read_buffered_body(std::span<char> out) {
  return take(out);
}

asio::awaitable<http::BodyRead> ClientConnection::Stream::read_body(
    std::span<char> out, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    http::BodyRead r = take(out);
    if (r.bytes > 0 || r.last || r.ec) co_return r;
    const bool woken = co_await wait_until(deadline, false);
    if (!woken && unread() == 0 && !in_done_) {
      abandon(NGHTTP2_CANCEL);
      r.ec = asio::error::timed_out;
      co_return r;
    }
  }
}

// ---- nghttp2 callbacks -------------------------------------------------------------------

struct ClientConnection::Callbacks {
  static ClientConnection& self(void* user) { return *static_cast<ClientConnection*>(user); }
  static Stream* stream(nghttp2_session* session, std::int32_t id) {
    return static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, id));
  }

  static int on_header(nghttp2_session* session, const nghttp2_frame* frame,
                       const std::uint8_t* name_p, std::size_t namelen, const std::uint8_t* value_p,
                       std::size_t valuelen, std::uint8_t, void*) {
    Stream* s = stream(session, frame->hd.stream_id);
    if (!s) return 0;
    s->rx_ += namelen + valuelen + 2;
    s->header_bytes_ += namelen + valuelen + 32;
    if (s->header_bytes_ > kMaxResponseHeaderBytes) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    const std::string_view name(reinterpret_cast<const char*>(name_p), namelen);
    const std::string_view value(reinterpret_cast<const char*>(value_p), valuelen);
    if (s->headers_done_) {
      s->has_trailers_ = true;
      s->trailers_.add(name, value);
      return 0;
    }
    if (name == ":status") {
      std::from_chars(value.data(), value.data() + value.size(), s->status_);
      return 0;
    }
    if (name == "content-length") {
      std::uint64_t n = 0;
      std::from_chars(value.data(), value.data() + value.size(), n);
      s->content_length_ = n;
      return 0;
    }
    s->headers_.add(name, value);
    return 0;
  }

  static int on_frame_recv(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    ClientConnection& c = self(user);
    if (frame->hd.type == NGHTTP2_GOAWAY) {
      c.going_away_ = true;  // streams above last_stream_id are closed by nghttp2 (refused)
      return 0;
    }
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
      c.peer_max_streams_ =
          nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
      return 0;
    }
    Stream* s = stream(session, frame->hd.stream_id);
    if (!s) return 0;
    const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (frame->hd.type == NGHTTP2_HEADERS) {
      if (!s->headers_done_) {
        if (s->status_ >= 100 && s->status_ < 200) {  // interim: wait for the final head
          s->status_ = 0;
          s->headers_.clear();
          s->header_bytes_ = 0;
          ++s->interim_;
          s->wake();
          return 0;
        }
        s->headers_done_ = true;
        s->head_end_stream_ = end_stream;
      }
      if (end_stream) s->in_done_ = true;
      s->wake();
    } else if (frame->hd.type == NGHTTP2_DATA && end_stream) {
      s->in_done_ = true;
      s->wake();
    }
    return 0;
  }

  static int on_data_chunk(nghttp2_session* session, std::uint8_t, std::int32_t id,
                           const std::uint8_t* data, std::size_t len, void*) {
    Stream* s = stream(session, id);
    if (!s) {
      nghttp2_session_consume(session, id, len);
      return 0;
    }
    s->rx_ += len;
    if (s->in_off_ > 0 && s->in_off_ >= s->in_.size() / 2) {
      s->in_.erase(0, s->in_off_);
      s->in_off_ = 0;
    }
    s->in_.append(reinterpret_cast<const char*>(data), len);
    s->wake();
    return 0;
  }

  static int on_stream_close(nghttp2_session* session, std::int32_t id, std::uint32_t code,
                             void* user) {
    ClientConnection& c = self(user);
    Stream* s = stream(session, id);
    if (!s) return 0;
    s->closed_ = true;
    s->close_code_ = code;
    s->pending_ = {};
    if (code != NGHTTP2_NO_ERROR && !s->in_done_) {
      spdlog::debug("upstream {}: stream {} reset ({})", c.label_, id,
                    nghttp2_http2_strerror(code));
    }
    s->wake();
    return 0;
  }

  static int on_error(nghttp2_session*, int, const char* msg, std::size_t len, void* user) {
    spdlog::debug("upstream {}: {}", self(user).label_, std::string_view(msg, len));
    return 0;
  }
};

// ---- the connection ----------------------------------------------------------------------

ClientConnection::ClientConnection(const asio::any_io_executor& ex, const ClientSettings& settings,
                                   std::string label)
    : socket_(ex),
      settings_(settings),
      label_(std::move(label)),
      write_event_(ex),
      ready_event_(ex) {}

ClientConnection::~ClientConnection() {
  if (session_) nghttp2_session_del(session_);
}

void ClientConnection::start(tcp::socket&& socket) {
  socket_ = std::move(socket);
  begin();
}

void ClientConnection::start(std::unique_ptr<TlsStream> tls) {
  tls_ = std::move(tls);
  tls_used_ = true;
  begin();
}

void ClientConnection::connect_failed(const error_code& ec) {
  fail(ec);
}

void ClientConnection::begin() {
  if (closed_) {  // closed (or failed) while connecting
    error_code ignored;
    lowest().close(ignored);
    return;
  }
  asio::co_spawn(lowest().get_executor(), run(),
                 support::log_exception("h2 upstream connection", [w = weak_from_this()] {
                   if (auto c = w.lock()) c->fail(asio::error::operation_aborted);
                 }));
}

bool ClientConnection::has_capacity() const noexcept {
  if (closed_ || going_away_) return false;
  return streams_ < std::min(settings_.max_concurrent_streams, peer_max_streams_);
}

std::shared_ptr<http::ClientStream> ClientConnection::open_stream() {
  return std::make_shared<Stream>(shared_from_this());
}

void ClientConnection::stream_done() noexcept {
  --streams_;
  if (streams_ == 0) {
    idle_since_ = Clock::now();
    if (going_away_) close();
  }
  if (on_stream_done_) on_stream_done_();
}

void ClientConnection::shutdown() noexcept {
  going_away_ = true;
  if (streams_ == 0) close();
}

void ClientConnection::close() noexcept {
  fail(asio::error::operation_aborted);
}

void ClientConnection::fail(const error_code& ec) noexcept {
  if (closed_) return;
  closed_ = true;
  connecting_ = false;
  error_ = ec;
  write_event_.cancel();
  ready_event_.cancel();
  error_code ignored;
  lowest().shutdown(tcp::socket::shutdown_both, ignored);
  lowest().close(ignored);
  for (auto& [id, s] : by_id_) {
    s->pending_ = {};
    s->wake();
  }
}

void ClientConnection::signal_write() noexcept {
  write_wake_ = true;
  if (writer_waiting_) write_event_.cancel();
}

asio::awaitable<error_code> ClientConnection::wait_ready(Clock::time_point deadline) {
  while (connecting_) {
    ready_event_.expires_at(deadline);
    co_await ready_event_.async_wait(kAwait);
    if (connecting_ && Clock::now() >= deadline) co_return asio::error::timed_out;
  }
  if (closed_) co_return error_ ? error_ : error_code(asio::error::connection_reset);
  co_return error_code{};
}

void ClientConnection::init_session() {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &Callbacks::on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &Callbacks::on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &Callbacks::on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &Callbacks::on_stream_close);
  nghttp2_session_callbacks_set_error_callback2(cbs, &Callbacks::on_error);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_no_closed_streams(opt, 1);
  nghttp2_session_client_new2(&session_, cbs, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  const nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, settings_.initial_window_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, kMaxResponseHeaderBytes},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, std::size(iv));
  nghttp2_session_set_local_window_size(
      session_, NGHTTP2_FLAG_NONE, 0, static_cast<std::int32_t>(settings_.connection_window_size));
}

asio::awaitable<void> ClientConnection::run() {
  auto self = shared_from_this();
  init_session();
  connecting_ = false;
  ready_ = true;
  ready_event_.cancel();
  asio::co_spawn(lowest().get_executor(), write_loop(),
                 support::log_exception("h2 upstream writer", [w = weak_from_this()] {
                   if (auto c = w.lock()) c->fail(asio::error::operation_aborted);
                 }));

  auto buf = std::make_unique<char[]>(kReadChunk);
  while (!closed_) {
    error_code rec;
    std::size_t n = 0;
    if (tls_)
      std::tie(rec, n) =
          co_await tls_->async_read_some(asio::buffer(buf.get(), kReadChunk), kAwait);
    else
      std::tie(rec, n) =
          co_await socket_.async_read_some(asio::buffer(buf.get(), kReadChunk), kAwait);
    if (closed_) break;
    if (rec) {
      fail(rec);
      break;
    }
    const auto rv =
        nghttp2_session_mem_recv(session_, reinterpret_cast<const std::uint8_t*>(buf.get()), n);
    if (rv < 0) {
      spdlog::warn("upstream {}: HTTP/2 error: {}", label_, nghttp2_strerror(static_cast<int>(rv)));
      fail(asio::error::connection_reset);
      break;
    }
    signal_write();
    if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) {
      fail(asio::error::eof);
      break;
    }
  }
}

asio::awaitable<void> ClientConnection::write_loop() {
  auto self = shared_from_this();
  while (!closed_) {
    write_wake_ = false;
    if (append_frames(session_, out_, kOutMax) < 0) fail(asio::error::connection_reset);
    if (closed_) break;
    if (out_.empty()) {
      if (!write_wake_) {
        writer_waiting_ = true;
        write_event_.expires_at(Clock::time_point::max());
        co_await write_event_.async_wait(kAwait);
        writer_waiting_ = false;
      }
      continue;
    }
    error_code ec;
    std::size_t n = 0;
    if (tls_)
      std::tie(ec, n) = co_await asio::async_write(*tls_, asio::buffer(out_), kAwait);
    else
      std::tie(ec, n) = co_await asio::async_write(socket_, asio::buffer(out_), kAwait);
    if (ec) {
      fail(ec);
      break;
    }
    out_.clear();
  }
}

}  // namespace turnpike::http2
