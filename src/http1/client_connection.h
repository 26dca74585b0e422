// HTTP/1.1 upstream connection: one TCP connection to a backend, used by one request at a time
// and pooled between requests by upstream/. Serializes the request head itself (the values
// were validated when parsed), streams bodies with Content-Length or chunked framing, and
// parses the response with Beast. The response may be read while the request body is still
// being written (full duplex). Every operation has a deadline. Owning worker thread only.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include "http1/parser.h"
#include "support/deadline.h"
#include "turnpike/http/client_stream.h"
#include "turnpike/http/message.h"
#include "turnpike/http/stream.h"

namespace turnpike::http1 {

class ClientConnection final : public http::ClientStream,
                               public std::enable_shared_from_this<ClientConnection> {
 public:
  using Clock = std::chrono::steady_clock;

  using TlsStream = boost::asio::ssl::stream<boost::asio::ip::tcp::socket>;

  /// A connected socket (cleartext), or a stream whose TLS handshake is done (upstream/ does
  /// the set-up).
  explicit ClientConnection(boost::asio::ip::tcp::socket&& socket);
  explicit ClientConnection(std::unique_ptr<TlsStream> tls);
  ~ClientConnection() override;

  /// Call once, right after construction by make_shared.
  void init();

  /// Writes the request head (`path_and_query` as the request-target) and the first body bytes.
  boost::asio::awaitable<boost::system::error_code> send_request(
      const http::RequestHead& head, std::string_view path_and_query, std::span<const char> body,
      bool end_stream, std::chrono::milliseconds timeout) override;
  boost::asio::awaitable<boost::system::error_code> send_body(
      std::span<const char> body, bool end_stream, std::chrono::milliseconds timeout) override;
  boost::asio::awaitable<boost::system::error_code> send_trailers(
      const http::HeaderMap& trailers, std::chrono::milliseconds timeout) override;
  /// Reads the final response head (skipping 1xx). `head_request`: no body follows.
  boost::asio::awaitable<boost::system::error_code> read_response_head(
      http::ResponseHead& head, bool head_request, std::chrono::milliseconds timeout) override;
  /// Decodes body bytes already buffered, without I/O.
  http::BodyRead read_buffered_body(std::span<char> out) override;
  boost::asio::awaitable<http::BodyRead> read_body(std::span<char> out,
                                                   std::chrono::milliseconds timeout) override;
  const http::HeaderMap* trailers() const noexcept override;

  /// True when the response was read completely and the connection may serve another request.
  bool reusable() const noexcept;
  bool is_open() const noexcept { return lowest().is_open(); }
  /// Whether the connection already served a request (a failure on it may be a stale close).
  bool reused() const noexcept { return requests_ > 1; }
  /// False if the peer closed (or sent unsolicited bytes) while the connection sat idle.
  bool still_alive() noexcept;
  void close() noexcept override;

  Clock::time_point idle_since() const noexcept { return idle_since_; }
  void mark_idle() noexcept { idle_since_ = Clock::now(); }
  const boost::asio::ip::tcp::endpoint& peer() const noexcept { return peer_; }
  std::uint64_t response_bytes() const noexcept override { return rx_; }

 private:
  boost::asio::awaitable<boost::system::error_code> write(
      std::span<const boost::asio::const_buffer> bufs, std::chrono::milliseconds timeout);
  boost::asio::awaitable<boost::system::error_code> read_more(
      support::Deadline::Clock::time_point deadline);

  boost::asio::ip::tcp::socket& lowest() noexcept { return tls_ ? tls_->next_layer() : socket_; }
  const boost::asio::ip::tcp::socket& lowest() const noexcept {
    return tls_ ? tls_->next_layer() : socket_;
  }

  boost::asio::ip::tcp::socket socket_;  // cleartext (unused with TLS)
  std::unique_ptr<TlsStream> tls_;
  boost::asio::ip::tcp::endpoint peer_;
  support::Deadline read_deadline_;   // response reads
  support::Deadline write_deadline_;  // request writes
  boost::beast::flat_buffer buffer_;
  std::string out_;
  http::ResponseHead* head_ = nullptr;
  std::optional<ResponseParser> parser_;
  bool request_chunked_ = false;
  bool request_done_ = false;
  bool tunnel_ = false;  // after 101 Switching Protocols: raw bytes both ways
  bool failed_ = false;
  int interim_ = 0;  // 1xx responses skipped for the current request
  std::uint64_t requests_ = 0;
  std::uint64_t rx_ = 0;
  Clock::time_point idle_since_{};
};

}  // namespace turnpike::http1
