// HTTP/1.1 downstream connection: reads requests with Beast's parser (strict framing, limits,
// timeouts), hands each one to the StreamHandler as an http::ServerStream, and writes the
// response with Content-Length or chunked framing. Requests on one connection are served one
// after another, so pipelined requests are answered in order. The request body may be read
// while the response is written (full duplex); once the body is read, a read stays pending so
// that a client closing its connection is noticed (and told to the stream's observer). A
// connection closed with request bytes unread lingers (half-closed, draining input for a
// moment) so the client can read the answer. Owning worker thread only.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include "http1/parser.h"
#include "support/block_cache.h"
#include "support/deadline.h"
#include "support/event.h"
#include "turnpike/http/connection_registry.h"
#include "turnpike/http/limits.h"
#include "turnpike/http/stream.h"

namespace turnpike::http1 {

class ServerConnection final : public std::enable_shared_from_this<ServerConnection>,
                               public http::ManagedConnection,
                               private http::ServerStream {
 public:
  using TlsStream = boost::asio::ssl::stream<boost::asio::ip::tcp::socket>;

  /// `initial`: bytes already read from the socket (while detecting the HTTP/2 preface).
  ServerConnection(boost::asio::ip::tcp::socket&& socket, const http::ServerLimits& limits,
                   http::ConnectionInfo info, http::StreamHandler& handler,
                   http::ConnectionRegistry& registry, std::string_view initial = {});
  /// Over TLS: `tls` has completed its handshake.
  ServerConnection(std::unique_ptr<TlsStream> tls, const http::ServerLimits& limits,
                   http::ConnectionInfo info, http::StreamHandler& handler,
                   http::ConnectionRegistry& registry);
  ~ServerConnection();

  /// Starts serving; the connection keeps itself alive until it closes.
  void start();

  void shutdown_when_idle() noexcept override;
  void abort() noexcept override;

 private:
  enum class State : std::uint8_t { Idle, ReadingHead, Serving, Closed };

  boost::asio::awaitable<void> run();
  // One step of reading a request head (no I/O): see parse_head().
  struct HeadStep {
    enum Kind { Done, NeedMore, Reject, Close } kind;
    int status = 0;
    std::string details;
    static HeadStep of(Kind k) { return HeadStep{k, 0, {}}; }
    static HeadStep reject(int status, std::string details) {
      return HeadStep{Reject, status, std::move(details)};
    }
  };
  void begin_head();
  HeadStep parse_head();
  HeadStep head_read_failed(boost::system::error_code ec);
  HeadStep finish_head();
  boost::asio::awaitable<boost::system::error_code> read_more();
  boost::asio::awaitable<void> reply_error(int status, std::string_view details);
  boost::asio::awaitable<boost::system::error_code> write(
      std::span<const boost::asio::const_buffer> bufs);
  boost::asio::awaitable<void> linger();
  int status_for(const boost::system::error_code& ec) const;
  // Takes `n` parsed bytes out of the buffer; they count as this request's.
  void consume(std::size_t n) noexcept {
    buffer_.consume(n);
    rx_ += n;
  }
  http::BodyRead parse_buffered(std::span<char> out);
  void start_watch();
  void on_watch(const boost::system::error_code& ec, std::size_t n);
  void arm_watch() noexcept;
  void on_watch_deadline();
  void close() noexcept;

  // http::ServerStream
  http::RequestHead& request() noexcept override { return head_; }
  const http::ConnectionInfo& connection() const noexcept override { return info_; }
  boost::asio::awaitable<http::BodyRead> read_body(std::span<char> out,
                                                   std::chrono::milliseconds timeout) override;
  http::BodyRead read_buffered_body(std::span<char> out) override;
  const http::HeaderMap* request_trailers() const noexcept override;
  void cancel_read() noexcept override;
  void set_observer(http::StreamObserver* observer) noexcept override;
  boost::asio::awaitable<boost::system::error_code> send_response(http::ResponseHead& head,
                                                                  std::span<const char> body,
                                                                  bool end_stream) override;
  boost::asio::awaitable<boost::system::error_code> send_body(std::span<const char> body,
                                                              bool end_stream) override;
  boost::asio::awaitable<boost::system::error_code> send_trailers(
      const http::HeaderMap& trailers) override;
  bool response_started() const noexcept override { return response_started_; }
  void reset() noexcept override;
  std::uint64_t bytes_received() const noexcept override { return rx_; }
  std::uint64_t bytes_sent() const noexcept override { return tx_; }

  boost::asio::ip::tcp::socket& lowest() noexcept { return tls_ ? tls_->next_layer() : socket_; }

  boost::asio::ip::tcp::socket socket_;  // cleartext (unused with TLS)
  std::unique_ptr<TlsStream> tls_;
  http::ServerLimits limits_;
  http::ConnectionInfo info_;
  http::StreamHandler& handler_;
  http::ConnectionRegistry& registry_;
  support::Deadline read_deadline_;   // head, idle, body and lingering reads
  support::Deadline write_deadline_;  // a write that makes no progress (limits.body_timeout)
  support::Deadline watch_deadline_;  // when a slow request starts watching for a close
  support::Event write_turn_;         // a writer waits for its turn (a 100 Continue in flight)
  support::Event watch_done_;         // run() waits for the watch read to complete
  boost::asio::cancellation_signal read_cancel_;  // cancel_read(): the body read only
  boost::beast::basic_flat_buffer<support::BlockAllocator<char>>
      buffer_;       // 16 KiB, per-thread cache
  std::string out_;  // serialized response head (+ chunk framing), reused
  http::StreamObserver* observer_ = nullptr;
  boost::system::error_code watch_ec_;  // how the watch read ended, for run() to see

  http::RequestHead head_;
  std::optional<RequestParser> parser_;
  State state_ = State::Idle;
  bool keep_alive_ = true;
  bool close_after_ = false;  // decided when the response head was written
  bool head_request_ = false;
  bool response_started_ = false;
  bool response_chunked_ = false;
  bool response_done_ = false;
  bool sent_continue_ = false;
  bool drain_requested_ = false;
  bool tunnel_ = false;  // after 101 Switching Protocols
  bool writing_ = false;
  bool reading_body_ = false;
  bool read_cancelled_ = false;  // the rest of the request body is not wanted
  bool watching_ = false;        // the watch read is in flight
  bool linger_ = false;          // close lingering: the client may still be sending
  std::uint64_t rx_ = 0;         // bytes of the current request
  std::uint64_t tx_ = 0;         // bytes of the current response
};

}  // namespace turnpike::http1
