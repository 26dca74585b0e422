#include "http1/server_connection.h"

#include <array>
#include <charconv>
#include <cstring>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>

#include "http1/framing.h"
#include "turnpike/http/date.h"
#include "turnpike/http/path.h"

namespace turnpike::http1 {

using namespace std::string_view_literals;

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using boost::system::error_code;
using tcp = asio::ip::tcp;

namespace {

constexpr std::size_t kReadChunk = 16 * 1024;
constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
// Closing with request bytes unread: how long to keep draining them (half-closed) so that the
// client reads the answer before the close, rather than a reset that may discard it.
constexpr auto kLingerTime = std::chrono::seconds(2);
// How long a request is served before a read is kept pending to notice the client leaving.
constexpr auto kWatchDelay = std::chrono::milliseconds(500);

bool body_forbidden(int status) {
  return (status >= 100 && status < 200) || status == 204 || status == 304;
}

}  // namespace

ServerConnection::ServerConnection(tcp::socket&& socket, const http::ServerLimits& limits,
                                   http::ConnectionInfo info, http::StreamHandler& handler,
                                   http::ConnectionRegistry& registry, std::string_view initial)
    : socket_(std::move(socket)),
      limits_(limits),
      info_(std::move(info)),
      handler_(handler),
      registry_(registry),
      read_deadline_(socket_.get_executor()),
      write_deadline_(socket_.get_executor()),
      watch_deadline_(socket_.get_executor()),
      write_turn_(socket_.get_executor()),
      watch_done_(socket_.get_executor()) {
  info_.body_timeout = limits_.body_timeout;
  out_.reserve(1024);
  if (!initial.empty()) {
    auto space = buffer_.prepare(initial.size());
    std::memcpy(space.data(), initial.data(), initial.size());
    buffer_.commit(initial.size());
  }
  registry_.add(this, info_.listener_id);
}

ServerConnection::ServerConnection(std::unique_ptr<TlsStream> tls, const http::ServerLimits& limits,
                                   http::ConnectionInfo info, http::StreamHandler& handler,
                                   http::ConnectionRegistry& registry)
    : ServerConnection(tcp::socket(tls->get_executor()), limits, std::move(info), handler,
                       registry) {
  tls_ = std::move(tls);
}

ServerConnection::~ServerConnection() {
  registry_.remove(this);
}

void ServerConnection::start() {
  auto cancel = [this] {
    error_code ignored;
    lowest().cancel(ignored);
  };
  read_deadline_.bind(cancel);
  write_deadline_.bind(cancel);
  watch_deadline_.bind([this] { on_watch_deadline(); });
  asio::co_spawn(lowest().get_executor(), run(), [](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        spdlog::error("http1 connection: unexpected exception: {}", ex.what());
      }
    }
  });
}

void ServerConnection::shutdown_when_idle() noexcept {
  drain_requested_ = true;
  if (state_ == State::Idle) {
    error_code ignored;
    lowest().cancel(ignored);
  }
}

void ServerConnection::abort() noexcept {
  close();
}

void ServerConnection::reset() noexcept {
  close();
}

void ServerConnection::close() noexcept {
  if (state_ == State::Closed) return;
  state_ = State::Closed;
  observer_ = nullptr;
  read_deadline_.cancel();
  write_deadline_.cancel();
  watch_deadline_.cancel();
  error_code ignored;
  lowest().close(ignored);  // (closing sends the FIN; a shutdown first would be a system call more)
  write_turn_.notify();
  watch_done_.notify();
}

asio::awaitable<error_code> ServerConnection::read_more() {
  // The watch read (start_watch) may be in flight, or may have ended: its result is this read's.
  const bool joined = watching_;
  while (watching_ && state_ != State::Closed)
    co_await watch_done_.wait();
  if (watch_ec_) co_return std::exchange(watch_ec_, {});
  if (state_ == State::Closed) co_return asio::error::not_connected;
  if (joined) co_return error_code{};
  const std::size_t room = buffer_.max_size() - buffer_.size();
  if (room == 0) co_return bhttp::error::buffer_overflow;
  const auto space = buffer_.prepare(std::min(room, kReadChunk));
  error_code ec;
  std::size_t n = 0;
  if (!reading_body_) {
    if (tls_)
      std::tie(ec, n) = co_await tls_->async_read_some(space, kAwait);
    else
      std::tie(ec, n) = co_await socket_.async_read_some(space, kAwait);
  } else if (tls_) {
    // A body read is bound to read_cancel_: cancel_read() ends it without touching a write.
    std::tie(ec, n) = co_await tls_->async_read_some(
        space, asio::bind_cancellation_slot(read_cancel_.slot(), kAwait));
  } else {
    std::tie(ec, n) = co_await socket_.async_read_some(
        space, asio::bind_cancellation_slot(read_cancel_.slot(), kAwait));
  }
  if (ec) {
    if (read_deadline_.expired()) co_return asio::error::timed_out;
    co_return ec;
  }
  buffer_.commit(n);
  co_return error_code{};
}

asio::awaitable<error_code> ServerConnection::write(std::span<const asio::const_buffer> bufs) {
  // One write at a time: a 100 Continue from the body reader may be in flight.
  while (writing_ && state_ != State::Closed)
    co_await write_turn_.wait();
  if (state_ == State::Closed) co_return asio::error::not_connected;
  writing_ = true;
  write_deadline_.expires_after(limits_.body_timeout);
  error_code ec;
  std::size_t n = 0;
  if (tls_)
    std::tie(ec, n) = co_await asio::async_write(*tls_, bufs, kAwait);
  else
    std::tie(ec, n) = co_await asio::async_write(socket_, bufs, kAwait);
  write_deadline_.clear();
  writing_ = false;
  write_turn_.notify();
  tx_ += n;
  if (ec && write_deadline_.expired()) co_return asio::error::timed_out;
  co_return ec;
}

// ---- the watch: noticing a client that leaves while its response is on its way ------------
//
// A request that is still being served kWatchDelay after it started (its body read) gets a read
// kept pending on the connection: a close (or reset) then tells the stream's observer, which
// cancels the upstream request. Bytes that arrive are the next request's (pipelining); they go
// into the buffer and run() joins the read. A request served faster never pays for it: no
// read, no system call, only a lazily re-armed timer.

void ServerConnection::arm_watch() noexcept {
  watch_deadline_.expires_after(kWatchDelay);
}

void ServerConnection::on_watch_deadline() {
  if (state_ != State::Serving || response_done_ || !observer_) return;
  if (parser_ && !parser_->is_done()) {  // the body is still coming: its reads will tell
    arm_watch();
    return;
  }
  start_watch();
}

void ServerConnection::start_watch() {
  // Nothing to learn when the client has already sent more (pipelining): it is there.
  if (watching_ || watch_ec_ || state_ != State::Serving || tunnel_ || !head_.upgrade.empty() ||
      buffer_.size() > 0)
    return;
  watching_ = true;
  const auto space = buffer_.prepare(std::min(buffer_.max_size(), kReadChunk));
  auto done = [self = shared_from_this()](const error_code& ec, std::size_t n) {
    self->on_watch(ec, n);
  };
  if (tls_)
    tls_->async_read_some(space, std::move(done));
  else
    socket_.async_read_some(space, std::move(done));
}

void ServerConnection::on_watch(const error_code& ec, std::size_t n) {
  watching_ = false;
  watch_done_.notify();
  if (!ec) {
    // The next request's first bytes (pipelining): the client is there. The watch ends, so
    // that run() parses them as soon as this response is done.
    buffer_.commit(n);
    return;
  }
  watch_ec_ = read_deadline_.expired() ? error_code(asio::error::timed_out) : ec;
  // The client closed (or reset) its connection while its response was on its way.
  if (state_ == State::Serving && !response_done_ && observer_) {
    http::StreamObserver* o = std::exchange(observer_, nullptr);
    o->on_client_reset();
  }
}

void ServerConnection::set_observer(http::StreamObserver* observer) noexcept {
  observer_ = observer;
  if (observer)
    arm_watch();
  else
    watch_deadline_.clear();
}

// ---- connection loop ----------------------------------------------------------------------

int ServerConnection::status_for(const error_code& ec) const {
  if (ec == asio::error::timed_out) return 408;
  if (ec == bhttp::error::body_limit) return 413;
  if (ec == bhttp::error::header_limit) {
    if (parser_ && parser_->too_many_headers()) return 431;
    // The request line was parsed (Beast consumed it): the fields are what is too large.
    if (!head_.method.empty()) return head_.target.size() > limits_.max_uri_bytes ? 414 : 431;
    // Over the header limit before the request line ended: the URI is what is too long.
    std::string_view data(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    std::size_t eol = data.find('\n');
    if (eol == std::string_view::npos || eol > limits_.max_uri_bytes) return 414;
    return 431;
  }
  // 505 only for a well-formed version we do not speak (HTTP/2.0 over HTTP/1 framing, say);
  // a garbled request line (bare LF after the version, too) is a plain 400.
  if (ec == bhttp::error::bad_version && parser_ && parser_->unsupported_version()) return 505;
  return 400;
}

asio::awaitable<void> ServerConnection::run() {
  auto self = shared_from_this();
  // Bound on buffered, unparsed input: a full header block plus one read.
  buffer_.max_size(limits_.max_header_bytes + kReadChunk);

  while (state_ != State::Closed) {
    state_ = State::Idle;
    if (drain_requested_ || registry_.draining()) break;
    rx_ = 0;
    tx_ = 0;
    if (buffer_.size() == 0 || watching_ || watch_ec_) {
      read_deadline_.expires_after(limits_.idle_timeout);
      error_code ec = co_await read_more();
      if (ec) break;  // idle timeout, client gone, or drain: close quietly
    }
    begin_head();
    HeadStep step = parse_head();
    while (step.kind == HeadStep::NeedMore) {
      const error_code ec = co_await read_more();
      step = ec ? head_read_failed(ec) : parse_head();
    }
    if (step.kind == HeadStep::Done) step = finish_head();
    if (step.kind == HeadStep::Reject) co_await reply_error(step.status, step.details);
    if (step.kind != HeadStep::Done) break;

    state_ = State::Serving;
    co_await handler_.serve(*this);
    observer_ = nullptr;
    if (state_ == State::Closed) break;
    if (!response_started_) {
      // A handler that answered nothing because its client left (the watch saw the close) is
      // not a server error: there is nobody to answer and nothing more to log.
      if (!watch_ec_) co_await reply_error(500, "handler sent no response");
      break;
    }
    // The request body was not read to its end: what follows it cannot be parsed.
    if (read_cancelled_ || (parser_ && !parser_->is_done())) {
      linger_ = true;
      break;
    }
    if (!response_done_ || close_after_) break;
  }
  if (linger_) co_await linger();
  close();
}

// Closes the sending side and drains what the client still sends for a moment, so that closing
// with unread bytes does not reset the connection before the client has read the answer
// (RFC 9112 section 9.6).
asio::awaitable<void> ServerConnection::linger() {
  if (state_ == State::Closed || tunnel_) co_return;
  error_code ignored;
  lowest().shutdown(tcp::socket::shutdown_send, ignored);
  read_deadline_.expires_after(kLingerTime);
  for (;;) {
    buffer_.clear();
    const error_code ec = co_await read_more();
    if (ec) break;
  }
}

// Reading a request head is plain functions, not a coroutine: the head is almost always
// buffered whole by the read that woke the connection, and a coroutine here would cost a frame
// allocation per request. run() does the waiting (read_more) and the answering (reply_error).

void ServerConnection::begin_head() {
  state_ = State::ReadingHead;
  head_ = http::RequestHead{};
  head_.headers.reserve(16);
  parser_.emplace(head_, limits_.max_headers);
  parser_->eager(false);
  parser_->header_limit(
      static_cast<std::uint32_t>(std::min<std::uint64_t>(limits_.max_header_bytes, UINT32_MAX)));
  if (limits_.max_body_bytes)
    parser_->body_limit(*limits_.max_body_bytes);
  else
    parser_->body_limit(boost::none);
  response_started_ = response_done_ = response_chunked_ = sent_continue_ = false;
  close_after_ = read_cancelled_ = false;
  read_deadline_.expires_after(limits_.header_timeout);
}

// Parses what is buffered: Done once the head is complete (then finish_head()), NeedMore, or
// Reject with the answer to send.
ServerConnection::HeadStep ServerConnection::parse_head() {
  error_code ec;
  std::size_t n = parser_->put(buffer_.data(), ec);
  if (!ec && parser_->is_header_done()) {
    std::string_view block(static_cast<const char*>(buffer_.data().data()), n);
    const bool strict = header_block_is_strict(block);
    consume(n);
    if (!strict) return HeadStep::reject(400, "obs-fold or bare LF in header");
    return HeadStep::of(HeadStep::Done);
  }
  consume(n);
  if (ec && ec != bhttp::error::need_more) return HeadStep::reject(status_for(ec), ec.message());
  // Refuse an over-long request line early, before the whole header limit is buffered. Once
  // the request line is parsed (and consumed), what is buffered is header fields: a long one
  // is the header limit's business (431), not the URI's.
  if (head_.method.empty() && buffer_.size() > limits_.max_uri_bytes + 32) {
    std::string_view data(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    std::size_t eol = data.find('\n');
    if (eol == std::string_view::npos || eol > limits_.max_uri_bytes + 32)
      return HeadStep::reject(414, "request-target too long");
  }
  return HeadStep::of(HeadStep::NeedMore);
}

// A read for more of the head failed: answer a timeout or an overflow, close quietly otherwise.
ServerConnection::HeadStep ServerConnection::head_read_failed(error_code ec) {
  if (ec == asio::error::timed_out) return HeadStep::reject(408, "request header timeout");
  if (ec == bhttp::error::buffer_overflow) return HeadStep::reject(431, "request header too large");
  return HeadStep::of(HeadStep::Close);
}

// Validates a complete head and fills in what the handler reads (path, query, host).
ServerConnection::HeadStep ServerConnection::finish_head() {
  read_deadline_.clear();
  // Framing and semantics Beast accepts but RFC 9112 makes us refuse.
  if (head_.target.size() > limits_.max_uri_bytes)
    return HeadStep::reject(414, "request-target too long");
  if (parser_->saw_transfer_encoding() && !parser_->chunked()) {
    bool mentions_chunked = false;
    if (const std::string* te = head_.headers.get("transfer-encoding"))
      mentions_chunked = te->find("chunked") != std::string::npos;
    return HeadStep::reject(mentions_chunked ? 400 : 501, "unsupported transfer-encoding");
  }
  if (parser_->saw_transfer_encoding() && parser_->version() == 10)
    return HeadStep::reject(400, "transfer-encoding in HTTP/1.0");
  if (parser_->host_count() > 1 || (parser_->version() == 11 && parser_->host_count() == 0))
    return HeadStep::reject(400, "missing or repeated Host");
  auto split = http::normalize_target(head_.target);
  if (!split) return HeadStep::reject(400, "invalid request-target");
  head_.path = std::move(split->path);
  head_.query = std::move(split->query);
  head_.host = http::normalize_host(head_.authority);
  keep_alive_ = parser_->version() == 11
                    ? !parser_->connection_close()
                    : parser_->connection_keep_alive() && !parser_->connection_close();
  head_request_ = head_.method == "HEAD";
  if (parser_->connection_upgrade() && parser_->version() == 11) {
    if (const std::string* up = head_.headers.get("upgrade")) head_.upgrade = *up;
  }
  http::strip_hop_by_hop(head_.headers);
  return HeadStep::of(HeadStep::Done);
}

asio::awaitable<void> ServerConnection::reply_error(int status, std::string_view details) {
  std::string body = R"({"error":")";
  body += http::reason_phrase(status);
  body += "\"}";
  handler_.on_rejected(info_, head_, status, details, rx_ + buffer_.size(), tx_ + body.size());
  if (state_ == State::Closed) co_return;
  out_.clear();
  out_ += "HTTP/1.1 "sv;
  append_decimal(out_, static_cast<std::uint64_t>(status));
  out_ += ' ';
  out_ += http::reason_phrase(status);
  out_ += "\r\nDate: "sv;
  out_ += http::http_date_now();
  out_ += "\r\nContent-Type: application/json\r\nContent-Length: "sv;
  append_decimal(out_, body.size());
  out_ += "\r\nConnection: close\r\n\r\n"sv;
  std::array<asio::const_buffer, 2> bufs{asio::buffer(out_), asio::buffer(body)};
  co_await write(bufs);
  close_after_ = true;
  linger_ = true;  // the client may be sending more: let it read the answer first
}

// ---- the request body -----------------------------------------------------------------------

// Decodes body bytes already buffered into `out`, without I/O.
http::BodyRead ServerConnection::parse_buffered(std::span<char> out) {
  http::BodyRead r;
  parser_->set_output(out);
  while (buffer_.size() > 0) {
    error_code ec;
    std::size_t n = parser_->put(buffer_.data(), ec);
    consume(n);
    if (ec && ec != bhttp::error::need_more && ec != bhttp::error::need_buffer) {
      r.ec = ec;
      break;
    }
    // The parser took framing only (a chunk header, say): what is buffered may hold more.
    if (n == 0 || parser_->produced() > 0 || parser_->is_done()) break;
  }
  r.bytes = parser_->produced();
  r.last = !r.ec && parser_->is_done();
  return r;
}

http::BodyRead ServerConnection::read_buffered_body(std::span<char> out) {
  http::BodyRead r;
  if (tunnel_ || read_cancelled_ || state_ == State::Closed) return r;
  if (!parser_ || parser_->is_done()) {
    r.last = true;
    return r;
  }
  r = parse_buffered(out);
  return r;
}

const http::HeaderMap* ServerConnection::request_trailers() const noexcept {
  if (!parser_ || !parser_->is_done() || parser_->trailers().empty()) return nullptr;
  return &parser_->trailers();
}

void ServerConnection::cancel_read() noexcept {
  if (tunnel_) return;
  read_cancelled_ = true;
  if (reading_body_) read_cancel_.emit(asio::cancellation_type::terminal);
}

asio::awaitable<http::BodyRead> ServerConnection::read_body(std::span<char> out,
                                                            std::chrono::milliseconds timeout) {
  http::BodyRead r;
  if (tunnel_) {
    // Upgraded: the client's bytes as they come; the proxy watches the tunnel's idle time.
    if (state_ == State::Closed) {
      r.ec = asio::error::not_connected;
      co_return r;
    }
    if (buffer_.size() > 0) {
      r.bytes = asio::buffer_copy(asio::buffer(out.data(), out.size()), buffer_.data());
      consume(r.bytes);
      co_return r;
    }
    read_deadline_.expires_after(timeout);
    error_code ec;
    if (tls_)
      std::tie(ec, r.bytes) =
          co_await tls_->async_read_some(asio::buffer(out.data(), out.size()), kAwait);
    else
      std::tie(ec, r.bytes) =
          co_await socket_.async_read_some(asio::buffer(out.data(), out.size()), kAwait);
    read_deadline_.clear();
    rx_ += r.bytes;
    if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
      r.last = true;
    else if (ec)
      r.ec = read_deadline_.expired() ? error_code(asio::error::timed_out) : ec;
    co_return r;
  }
  if (read_cancelled_) {
    r.ec = asio::error::operation_aborted;
    co_return r;
  }
  if (!parser_ || parser_->is_done() || state_ == State::Closed) {
    r.last = true;
    co_return r;
  }
  if (head_.expect_continue && !sent_continue_ && buffer_.size() == 0 && !response_started_) {
    sent_continue_ = true;
    static constexpr std::string_view k100 = "HTTP/1.1 100 Continue\r\n\r\n";
    std::array<asio::const_buffer, 1> bufs{asio::buffer(k100.data(), k100.size())};
    const error_code ec = co_await write(bufs);
    if (ec) {
      r.ec = ec;
      co_return r;
    }
  }
  reading_body_ = true;
  for (;;) {
    r = parse_buffered(out);
    if (r.ec || r.bytes > 0 || r.last) break;
    read_deadline_.expires_after(timeout);
    error_code ec = co_await read_more();
    read_deadline_.clear();
    if (read_cancelled_) ec = asio::error::operation_aborted;
    if (ec == bhttp::error::buffer_overflow) ec = bhttp::error::bad_chunk;
    if (ec == asio::error::eof) ec = bhttp::error::partial_message;
    if (ec) {
      r.ec = ec;
      break;
    }
  }
  reading_body_ = false;
  co_return r;
}

// ---- the response ---------------------------------------------------------------------------

asio::awaitable<error_code> ServerConnection::send_response(http::ResponseHead& head,
                                                            std::span<const char> body,
                                                            bool end_stream) {
  response_started_ = true;
  const bool http10 = head_.protocol == http::Protocol::Http10;
  if (head.status == 101 && !head_.upgrade.empty()) {
    // Switching protocols: the head, then raw bytes both ways until one side closes.
    tunnel_ = true;
    keep_alive_ = false;
  }
  // Close when the client asked or when draining. An error answer while the request body is
  // still arriving closes too: its remaining bytes will not be read (they would be taken for
  // the next request). A success answer may yet see the body end (a streaming echo); if it does
  // not, the connection closes after the response without having said so.
  const bool body_pending = parser_ && !parser_->is_done();
  close_after_ = !keep_alive_ || drain_requested_ || registry_.draining() ||
                 (body_pending && (head.status >= 300 || read_cancelled_));
  const bool no_body = head_request_ || body_forbidden(head.status) || !head.has_body;

  out_.clear();
  out_ += http10 ? "HTTP/1.0 "sv : "HTTP/1.1 "sv;
  append_decimal(out_, static_cast<std::uint64_t>(head.status));
  out_ += ' ';
  if (head.reason.empty())
    out_ += http::reason_phrase(head.status);
  else
    out_ += head.reason;
  out_ += "\r\n"sv;
  for (const auto& h : head.headers) {
    append_field(out_, h.name, h.value);
  }
  response_chunked_ = false;
  if (body_forbidden(head.status)) {
    // no framing headers
  } else if (head.content_length) {
    out_ += "Content-Length: "sv;
    append_decimal(out_, *head.content_length);
    out_ += "\r\n"sv;
  } else if (no_body) {
    if (!head_request_) out_ += "Content-Length: 0\r\n"sv;
  } else if (end_stream) {
    out_ += "Content-Length: "sv;
    append_decimal(out_, body.size());
    out_ += "\r\n"sv;
  } else if (!http10) {
    out_ += "Transfer-Encoding: chunked\r\n"sv;
    response_chunked_ = true;
  } else {
    close_after_ = true;  // HTTP/1.0: the body ends when the connection does
  }
  if (tunnel_)
    ;  // the handler's Connection: upgrade stands
  else if (close_after_)
    out_ += "Connection: close\r\n"sv;
  else if (http10)
    out_ += "Connection: keep-alive\r\n"sv;
  out_ += "\r\n"sv;

  std::span<const char> payload = no_body ? std::span<const char>{} : body;
  FrameBuffers bufs;
  std::size_t nbufs = frame_body(out_, payload, response_chunked_, end_stream, bufs);
  const std::span<const asio::const_buffer> frames(bufs.data(), nbufs);
  error_code ec = co_await write(frames);
  if (ec) {
    close();
    co_return ec;
  }
  if (end_stream) response_done_ = true;
  co_return error_code{};
}

asio::awaitable<error_code> ServerConnection::send_body(std::span<const char> body,
                                                        bool end_stream) {
  if (state_ == State::Closed) co_return asio::error::not_connected;
  if (tunnel_) {
    if (!body.empty()) {
      std::array<asio::const_buffer, 1> bufs{asio::buffer(body.data(), body.size())};
      const error_code ec = co_await write(bufs);
      if (ec) {
        close();
        co_return ec;
      }
    }
    if (end_stream) {
      response_done_ = true;
      error_code ignored;
      lowest().shutdown(tcp::socket::shutdown_send, ignored);
    }
    co_return error_code{};
  }
  if (head_request_ || response_done_) {
    if (end_stream) response_done_ = true;
    co_return error_code{};
  }
  out_.clear();
  FrameBuffers bufs;
  std::size_t nbufs = frame_body(out_, body, response_chunked_, end_stream, bufs);
  if (nbufs > 0) {
    const std::span<const asio::const_buffer> frames(bufs.data(), nbufs);
    error_code ec = co_await write(frames);
    if (ec) {
      close();
      co_return ec;
    }
  }
  if (end_stream) response_done_ = true;
  co_return error_code{};
}

asio::awaitable<error_code> ServerConnection::send_trailers(const http::HeaderMap& trailers) {
  if (state_ == State::Closed) co_return asio::error::not_connected;
  if (!response_chunked_ || head_request_ || response_done_)
    co_return co_await send_body(std::span<const char>(), true);
  out_.assign("0\r\n");
  for (const auto& t : trailers) {
    if (!http::trailer_allowed(t.name)) continue;
    append_field(out_, t.name, t.value);
  }
  out_ += "\r\n"sv;
  std::array<asio::const_buffer, 1> bufs{asio::buffer(out_)};
  const error_code ec = co_await write(bufs);
  if (ec) {
    close();
    co_return ec;
  }
  response_done_ = true;
  co_return error_code{};
}

}  // namespace turnpike::http1
