#include "http1/client_connection.h"

#include <sys/socket.h>

#include <array>
#include <charconv>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>

#include "http1/framing.h"

namespace turnpike::http1 {

using namespace std::string_view_literals;

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using boost::system::error_code;
using tcp = asio::ip::tcp;

namespace {

// One read: the exchange relays up to BufferPool::kSize (32 KiB) per write, so a response of
// that size goes out in one write.
constexpr std::size_t kReadChunk = 32 * 1024;
constexpr std::size_t kMaxResponseHeader = 64 * 1024;
constexpr std::uint32_t kMaxResponseHeaders = 200;
// Interim (1xx) responses skipped before the final one; more is a hostile backend.
constexpr int kMaxInterim = 16;
constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);

}  // namespace

ClientConnection::ClientConnection(tcp::socket&& socket)
    : socket_(std::move(socket)),
      read_deadline_(socket_.get_executor()),
      write_deadline_(socket_.get_executor()) {
  error_code ignored;
  peer_ = socket_.remote_endpoint(ignored);
  out_.reserve(1024);
  buffer_.max_size(kMaxResponseHeader + kReadChunk);
}

ClientConnection::ClientConnection(std::unique_ptr<TlsStream> tls)
    : ClientConnection(tcp::socket(tls->get_executor())) {
  tls_ = std::move(tls);
  error_code ignored;
  peer_ = tls_->next_layer().remote_endpoint(ignored);
}

ClientConnection::~ClientConnection() {
  close();
}

void ClientConnection::init() {
  auto cancel = [this] {
    error_code ignored;
    lowest().cancel(ignored);
  };
  read_deadline_.bind(cancel);
  write_deadline_.bind(cancel);
}

void ClientConnection::close() noexcept {
  failed_ = true;
  read_deadline_.cancel();
  write_deadline_.cancel();
  error_code ignored;
  if (lowest().is_open()) {
    lowest().shutdown(tcp::socket::shutdown_both, ignored);
    lowest().close(ignored);
  }
}

bool ClientConnection::still_alive() noexcept {
  if (!lowest().is_open()) return false;
  // Over TLS, bytes may arrive unasked (TLS 1.3 session tickets) and cannot be told apart from
  // a close here: rely on the idle timeout and the proxy's retry of a stale connection instead.
  if (tls_) return true;
  char c;
  ssize_t n = ::recv(socket_.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return false;  // orderly close
  if (n > 0) return false;   // unsolicited bytes: the connection's framing is unknown
  return errno == EAGAIN || errno == EWOULDBLOCK;
}

asio::awaitable<error_code> ClientConnection::write(std::span<const asio::const_buffer> bufs,
                                                    std::chrono::milliseconds timeout) {
  if (failed_ && !lowest().is_open()) co_return asio::error::not_connected;
  write_deadline_.expires_after(timeout);
  error_code ec;
  std::size_t n = 0;
  if (tls_)
    std::tie(ec, n) = co_await asio::async_write(*tls_, bufs, kAwait);
  else
    std::tie(ec, n) = co_await asio::async_write(socket_, bufs, kAwait);
  (void)n;
  write_deadline_.clear();
  if (ec) {
    failed_ = true;
    co_return write_deadline_.expired() ? error_code(asio::error::timed_out) : ec;
  }
  co_return error_code{};
}

asio::awaitable<error_code> ClientConnection::read_more(Clock::time_point deadline) {
  const std::size_t room = buffer_.max_size() - buffer_.size();
  if (room == 0) co_return bhttp::error::header_limit;
  read_deadline_.expires_at(deadline);
  const auto space = buffer_.prepare(std::min(room, kReadChunk));
  error_code ec;
  std::size_t n = 0;
  if (tls_)
    std::tie(ec, n) = co_await tls_->async_read_some(space, kAwait);
  else
    std::tie(ec, n) = co_await socket_.async_read_some(space, kAwait);
  read_deadline_.clear();
  if (ec) {
    failed_ = true;
    co_return read_deadline_.expired() ? error_code(asio::error::timed_out) : ec;
  }
  buffer_.commit(n);
  rx_ += n;
  co_return error_code{};
}

asio::awaitable<error_code> ClientConnection::send_request(const http::RequestHead& head,
                                                           std::string_view path_and_query,
                                                           std::span<const char> body,
                                                           bool end_stream,
                                                           std::chrono::milliseconds timeout) {
  ++requests_;
  rx_ = 0;
  request_done_ = false;
  tunnel_ = false;
  interim_ = 0;
  parser_.reset();
  out_.clear();
  out_ += head.method;
  out_ += ' ';
  out_ += path_and_query;
  out_ += " HTTP/1.1\r\n"sv;
  for (const auto& h : head.headers) {
    append_field(out_, h.name, h.value);
  }
  request_chunked_ = false;
  if (head.content_length) {
    if (*head.content_length > 0 || head.method == "POST" || head.method == "PUT" ||
        head.method == "PATCH") {
      out_ += "Content-Length: "sv;
      append_decimal(out_, *head.content_length);
      out_ += "\r\n"sv;
    }
  } else if (head.has_body) {
    out_ += "Transfer-Encoding: chunked\r\n"sv;
    request_chunked_ = true;
  }
  out_ += "\r\n"sv;

  FrameBuffers bufs;
  std::size_t nbufs = frame_body(out_, body, request_chunked_, end_stream, bufs);
  const std::span<const asio::const_buffer> frames(bufs.data(), nbufs);
  error_code ec = co_await write(frames, timeout);
  if (!ec && end_stream) request_done_ = true;
  co_return ec;
}

asio::awaitable<error_code> ClientConnection::send_body(std::span<const char> body, bool end_stream,
                                                        std::chrono::milliseconds timeout) {
  if (tunnel_) {
    error_code ec;
    if (!body.empty()) {
      std::array<asio::const_buffer, 1> bufs{asio::buffer(body.data(), body.size())};
      ec = co_await write(bufs, timeout);
    }
    if (!ec && end_stream) {
      // The client is done sending: pass the half-close on.
      error_code ignored;
      lowest().shutdown(tcp::socket::shutdown_send, ignored);
    }
    co_return ec;
  }
  out_.clear();
  FrameBuffers bufs;
  std::size_t nbufs = frame_body(out_, body, request_chunked_, end_stream, bufs);
  const std::span<const asio::const_buffer> frames(bufs.data(), nbufs);
  error_code ec;
  if (nbufs > 0) ec = co_await write(frames, timeout);
  if (!ec && end_stream) request_done_ = true;
  co_return ec;
}

asio::awaitable<error_code> ClientConnection::send_trailers(const http::HeaderMap& trailers,
                                                            std::chrono::milliseconds timeout) {
  if (tunnel_ || !request_chunked_)
    co_return co_await send_body(std::span<const char>(), true, timeout);
  out_.assign("0\r\n");
  for (const auto& t : trailers) {
    if (!http::trailer_allowed(t.name)) continue;
    append_field(out_, t.name, t.value);
  }
  out_ += "\r\n"sv;
  std::array<asio::const_buffer, 1> bufs{asio::buffer(out_)};
  error_code ec = co_await write(bufs, timeout);
  if (!ec) request_done_ = true;
  co_return ec;
}

const http::HeaderMap* ClientConnection::trailers() const noexcept {
  if (tunnel_ || !parser_ || !parser_->is_done() || parser_->trailers().empty()) return nullptr;
  return &parser_->trailers();
}

asio::awaitable<error_code> ClientConnection::read_response_head(
    http::ResponseHead& head, bool head_request, std::chrono::milliseconds timeout) {
  head_ = &head;
  // One deadline for the final head, however many interim responses come first.
  const auto deadline = Clock::now() + timeout;
  for (;;) {  // loops over interim (1xx) responses
    head = http::ResponseHead{};
    head.headers.reserve(16);
    parser_.emplace(head, kMaxResponseHeaders);
    parser_->eager(false);
    parser_->header_limit(kMaxResponseHeader);
    parser_->body_limit(boost::none);
    if (head_request) parser_->skip(true);
    for (;;) {
      error_code ec;
      std::size_t n = buffer_.size() ? parser_->put(buffer_.data(), ec) : 0;
      if (buffer_.size() == 0) ec = bhttp::error::need_more;
      buffer_.consume(n);
      if (!ec && parser_->is_header_done()) break;
      if (ec && ec != bhttp::error::need_more) {
        failed_ = true;
        co_return ec;
      }
      const error_code rec = co_await read_more(deadline);
      if (rec) co_return rec;
    }
    if (head.status >= 100 && head.status < 200 && head.status != 101) {
      if (++interim_ > kMaxInterim) {
        failed_ = true;
        co_return bhttp::error::bad_status;
      }
      continue;
    }
    break;
  }
  http::strip_hop_by_hop(head.headers);
  head.has_body = !parser_->is_done();
  if (head.status == 101) {
    tunnel_ = true;  // bytes after the head belong to the upgraded protocol
    failed_ = true;  // never pooled again
    head.has_body = false;
  }
  co_return error_code{};
}

http::BodyRead ClientConnection::read_buffered_body(std::span<char> out) {
  http::BodyRead r;
  if (tunnel_) {
    r.bytes = asio::buffer_copy(asio::buffer(out.data(), out.size()), buffer_.data());
    buffer_.consume(r.bytes);
    return r;
  }
  if (!parser_ || parser_->is_done()) {
    r.last = true;
    return r;
  }
  parser_->set_output(out);
  // Parse until body bytes come out, the body ends, or the buffer holds nothing more the parser
  // can take (a put may consume only framing, such as a chunk header).
  while (buffer_.size() > 0) {
    error_code ec;
    std::size_t n = parser_->put(buffer_.data(), ec);
    buffer_.consume(n);
    if (ec && ec != bhttp::error::need_more && ec != bhttp::error::need_buffer) {
      failed_ = true;
      r.ec = ec;
      break;
    }
    if (n == 0 || parser_->produced() > 0 || parser_->is_done()) break;
  }
  r.bytes = parser_->produced();
  r.last = parser_->is_done();
  return r;
}

asio::awaitable<http::BodyRead> ClientConnection::read_body(std::span<char> out,
                                                            std::chrono::milliseconds timeout) {
  if (tunnel_) {
    http::BodyRead r = read_buffered_body(out);
    if (r.bytes > 0) co_return r;
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
  for (;;) {
    http::BodyRead r = read_buffered_body(out);
    if (r.ec || r.bytes > 0 || r.last) co_return r;
    error_code ec = co_await read_more(Clock::now() + timeout);
    if (ec == asio::error::eof && parser_->need_eof()) {
      // A close-delimited body ends with the connection.
      error_code ignored;
      parser_->put_eof(ignored);
      r.last = true;
      failed_ = true;  // not reusable
      co_return r;
    }
    if (ec) {
      r.ec = ec;
      co_return r;
    }
  }
}

bool ClientConnection::reusable() const noexcept {
  return !failed_ && request_done_ && parser_ && parser_->is_done() &&
         !parser_->connection_close() && parser_->version() == 11 && buffer_.size() == 0 &&
         lowest().is_open();
}

}  // namespace turnpike::http1
