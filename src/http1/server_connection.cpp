#include "http1/server_connection.h"

#include <array>
#include <charconv>
#include <cstring>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>

#include "http1/framing.h"
#include "turnpike/http/date.h"
#include "turnpike/http/path.h"

namespace turnpike::http1 {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using boost::system::error_code;
using tcp = asio::ip::tcp;

namespace {

constexpr std::size_t kReadChunk = 16 * 1024;
constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);

bool body_forbidden(int status) {
  return (status >= 100 && status < 200) || status == 204 || status == 304;
}

}  // namespace

ServerConnection::ServerConnection(tcp::socket&& socket, const config::Limits& limits,
                                   http::ConnectionInfo info, http::StreamHandler& handler,
                                   http::ConnectionRegistry& registry, std::string_view initial)
    : socket_(std::move(socket)),
      limits_(limits),
      info_(std::move(info)),
      handler_(handler),
      registry_(registry),
      deadline_(socket_.get_executor()) {
  out_.reserve(1024);
  if (!initial.empty()) {
    auto space = buffer_.prepare(initial.size());
    std::memcpy(space.data(), initial.data(), initial.size());
    buffer_.commit(initial.size());
  }
  registry_.add(this, info_.listener_id);
}

ServerConnection::ServerConnection(std::unique_ptr<TlsStream> tls, const config::Limits& limits,
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
  deadline_.bind(weak_from_this(), [this] {
    error_code ignored;
    lowest().cancel(ignored);
  });
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
  deadline_.cancel();
  error_code ignored;
  lowest().shutdown(tcp::socket::shutdown_both, ignored);
  lowest().close(ignored);
}

asio::awaitable<error_code> ServerConnection::read_more() {
  const std::size_t room = buffer_.max_size() - buffer_.size();
  if (room == 0) co_return bhttp::error::buffer_overflow;
  const auto space = buffer_.prepare(std::min(room, kReadChunk));
  error_code ec;
  std::size_t n = 0;
  if (tls_)
    std::tie(ec, n) = co_await tls_->async_read_some(space, kAwait);
  else
    std::tie(ec, n) = co_await socket_.async_read_some(space, kAwait);
  if (ec) {
    if (deadline_.expired()) co_return asio::error::timed_out;
    co_return ec;
  }
  buffer_.commit(n);
  rx_ += n;
  co_return error_code{};
}

asio::awaitable<error_code> ServerConnection::write(std::span<const asio::const_buffer> bufs) {
  deadline_.expires_after(limits_.body_timeout);
  error_code ec;
  std::size_t n = 0;
  if (tls_)
    std::tie(ec, n) = co_await asio::async_write(*tls_, bufs, kAwait);
  else
    std::tie(ec, n) = co_await asio::async_write(socket_, bufs, kAwait);
  deadline_.clear();
  tx_ += n;
  if (ec && deadline_.expired()) co_return asio::error::timed_out;
  co_return ec;
}

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
    if (buffer_.size() == 0) {
      deadline_.expires_after(limits_.idle_timeout);
      error_code ec = co_await read_more();
      if (ec) break;  // idle timeout, client gone, or drain: close quietly
    }
    if (!co_await read_head()) break;

    state_ = State::Serving;
    co_await handler_.serve(*this);
    if (state_ == State::Closed) break;
    if (!response_started_) {
      co_await reply_error(500, "handler sent no response");
      break;
    }
    if (!response_done_ || close_after_) break;
  }
  close();
}

// Reads and validates one request head. Returns false when the connection must close (an
// error answer, if any, has been sent).
asio::awaitable<bool> ServerConnection::read_head() {
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
  close_after_ = false;
  deadline_.expires_after(limits_.header_timeout);

  for (;;) {
    error_code ec;
    std::size_t n = parser_->put(buffer_.data(), ec);
    if (!ec && parser_->is_header_done()) {
      std::string_view block(static_cast<const char*>(buffer_.data().data()), n);
      buffer_.consume(n);
      if (!header_block_is_strict(block)) {
        co_await reply_error(400, "obs-fold or bare LF in header");
        co_return false;
      }
      break;
    }
    buffer_.consume(n);
    if (ec && ec != bhttp::error::need_more) {
      co_await reply_error(status_for(ec), ec.message());
      co_return false;
    }
    // Refuse an over-long request line early, before the whole header limit is buffered. Once
    // the request line is parsed (and consumed), what is buffered is header fields: a long one
    // is the header limit's business (431), not the URI's.
    if (head_.method.empty() && buffer_.size() > limits_.max_uri_bytes + 32) {
      std::string_view data(static_cast<const char*>(buffer_.data().data()), buffer_.size());
      std::size_t eol = data.find('\n');
      if (eol == std::string_view::npos || eol > limits_.max_uri_bytes + 32) {
        co_await reply_error(414, "request-target too long");
        co_return false;
      }
    }
    ec = co_await read_more();
    if (ec) {
      if (ec == asio::error::timed_out) {
        co_await reply_error(408, "request header timeout");
      } else if (ec == bhttp::error::buffer_overflow) {
        co_await reply_error(431, "request header too large");
      }
      co_return false;
    }
  }
  deadline_.clear();

  // Framing and semantics Beast accepts but RFC 9112 makes us refuse.
  if (head_.target.size() > limits_.max_uri_bytes) {
    co_await reply_error(414, "request-target too long");
    co_return false;
  }
  if (parser_->saw_transfer_encoding() && !parser_->chunked()) {
    bool mentions_chunked = false;
    if (const std::string* te = head_.headers.get("transfer-encoding"))
      mentions_chunked = te->find("chunked") != std::string::npos;
    co_await reply_error(mentions_chunked ? 400 : 501, "unsupported transfer-encoding");
    co_return false;
  }
  if (parser_->saw_transfer_encoding() && parser_->version() == 10) {
    co_await reply_error(400, "transfer-encoding in HTTP/1.0");
    co_return false;
  }
  if (parser_->host_count() > 1 || (parser_->version() == 11 && parser_->host_count() == 0)) {
    co_await reply_error(400, "missing or repeated Host");
    co_return false;
  }
  auto split = http::normalize_target(head_.target);
  if (!split) {
    co_await reply_error(400, "invalid request-target");
    co_return false;
  }
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
  co_return true;
}

asio::awaitable<void> ServerConnection::reply_error(int status, std::string_view details) {
  std::string body = R"({"error":")";
  body += http::reason_phrase(status);
  body += "\"}";
  handler_.on_rejected(info_, head_, status, details, rx_, tx_ + body.size());
  if (state_ == State::Closed) co_return;
  out_.clear();
  out_ += "HTTP/1.1 ";
  append_decimal(out_, static_cast<std::uint64_t>(status));
  out_ += ' ';
  out_ += http::reason_phrase(status);
  out_ += "\r\nDate: ";
  out_ += http::http_date_now();
  out_ += "\r\nContent-Type: application/json\r\nContent-Length: ";
  append_decimal(out_, body.size());
  out_ += "\r\nConnection: close\r\n\r\n";
  std::array<asio::const_buffer, 2> bufs{asio::buffer(out_), asio::buffer(body)};
  co_await write(bufs);
  close_after_ = true;
  // Let the client read the answer before the close (a RST could discard it).
  error_code ignored;
  lowest().shutdown(tcp::socket::shutdown_send, ignored);
}

asio::awaitable<http::BodyRead> ServerConnection::read_body(std::span<char> out) {
  http::BodyRead r;
  if (tunnel_) {
    // Upgraded: the client's bytes as they come; the proxy watches the tunnel's idle time.
    if (state_ == State::Closed) {
      r.ec = asio::error::not_connected;
      co_return r;
    }
    if (buffer_.size() > 0) {
      r.bytes = asio::buffer_copy(asio::buffer(out.data(), out.size()), buffer_.data());
      buffer_.consume(r.bytes);
      co_return r;
    }
    error_code ec;
    if (tls_)
      std::tie(ec, r.bytes) =
          co_await tls_->async_read_some(asio::buffer(out.data(), out.size()), kAwait);
    else
      std::tie(ec, r.bytes) =
          co_await socket_.async_read_some(asio::buffer(out.data(), out.size()), kAwait);
    rx_ += r.bytes;
    if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
      r.last = true;
    else
      r.ec = ec;
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
    if (error_code ec = co_await write(bufs)) {
      r.ec = ec;
      co_return r;
    }
  }
  parser_->set_output(out);
  for (;;) {
    if (buffer_.size() > 0) {
      error_code ec;
      std::size_t n = parser_->put(buffer_.data(), ec);
      buffer_.consume(n);
      if (ec && ec != bhttp::error::need_more && ec != bhttp::error::need_buffer) {
        r.ec = ec;
        r.bytes = parser_->produced();
        co_return r;
      }
      if (parser_->produced() > 0 || parser_->is_done()) break;
      // The parser took framing only (a chunk header, say): what is buffered may hold more.
      if (n > 0) continue;
    }
    if (parser_->produced() > 0 || parser_->is_done()) break;
    deadline_.expires_after(limits_.body_timeout);
    error_code ec = co_await read_more();
    deadline_.clear();
    if (ec == bhttp::error::buffer_overflow) ec = bhttp::error::bad_chunk;
    if (ec == asio::error::eof) ec = bhttp::error::partial_message;
    if (ec) {
      r.ec = ec;
      co_return r;
    }
  }
  r.bytes = parser_->produced();
  r.last = parser_->is_done();
  co_return r;
}

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
  // Close when the client asked, when draining, or when the request body was not read to the
  // end (its remaining bytes would be taken for the next request).
  close_after_ =
      !keep_alive_ || drain_requested_ || registry_.draining() || (parser_ && !parser_->is_done());
  const bool no_body = head_request_ || body_forbidden(head.status) || !head.has_body;

  out_.clear();
  out_ += http10 ? "HTTP/1.0 " : "HTTP/1.1 ";
  append_decimal(out_, static_cast<std::uint64_t>(head.status));
  out_ += ' ';
  if (head.reason.empty())
    out_ += http::reason_phrase(head.status);
  else
    out_ += head.reason;
  out_ += "\r\n";
  for (const auto& h : head.headers) {
    out_ += h.name;
    out_ += ": ";
    out_ += h.value;
    out_ += "\r\n";
  }
  response_chunked_ = false;
  if (body_forbidden(head.status)) {
    // no framing headers
  } else if (head.content_length) {
    out_ += "Content-Length: ";
    append_decimal(out_, *head.content_length);
    out_ += "\r\n";
  } else if (no_body) {
    if (!head_request_) out_ += "Content-Length: 0\r\n";
  } else if (end_stream) {
    out_ += "Content-Length: ";
    append_decimal(out_, body.size());
    out_ += "\r\n";
  } else if (!http10) {
    out_ += "Transfer-Encoding: chunked\r\n";
    response_chunked_ = true;
  } else {
    close_after_ = true;  // HTTP/1.0: the body ends when the connection does
  }
  if (tunnel_)
    ;  // the handler's Connection: upgrade stands
  else if (close_after_)
    out_ += "Connection: close\r\n";
  else if (http10)
    out_ += "Connection: keep-alive\r\n";
  out_ += "\r\n";

  std::span<const char> payload = no_body ? std::span<const char>{} : body;
  FrameBuffers bufs;
  std::size_t nbufs = frame_body(out_, payload, response_chunked_, end_stream, bufs);
  error_code ec = co_await write({bufs.data(), nbufs});
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
      if (error_code ec = co_await write(bufs)) {
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
    error_code ec = co_await write({bufs.data(), nbufs});
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
  if (!response_chunked_ || head_request_ || response_done_) co_return co_await send_body({}, true);
  out_.assign("0\r\n");
  for (const auto& t : trailers) {
    if (http::is_hop_by_hop(t.name) || http::iequals(t.name, "content-length")) continue;
    out_ += t.name;
    out_ += ": ";
    out_ += t.value;
    out_ += "\r\n";
  }
  out_ += "\r\n";
  std::array<asio::const_buffer, 1> bufs{asio::buffer(out_)};
  if (error_code ec = co_await write(bufs)) {
    close();
    co_return ec;
  }
  response_done_ = true;
  co_return error_code{};
}

}  // namespace turnpike::http1
