// HTTP/2 downstream connection (h2 over TLS, h2c with prior knowledge) on nghttp2: framing,
// HPACK, flow control and RFC 9113 message checks are nghttp2's; this class bridges its session
// to the worker's io_context (one reader, one writer coroutine) and runs each request stream
// through the same http::StreamHandler as HTTP/1.1. Request bodies are buffered only up to the
// flow-control window the handler has consumed; response bodies are taken from the handler
// only as the client's window allows, so neither side can make it buffer without bound. Abuse
// limits (rapid reset, CONTINUATION, control-frame and empty-frame floods, handlers in flight)
// end the offending connection with GOAWAY. Owning worker thread only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>

#include "http2/settings.h"
#include "support/deadline.h"
#include "turnpike/http/connection_registry.h"
#include "turnpike/http/limits.h"
#include "turnpike/http/stream.h"

struct nghttp2_session;

namespace turnpike::http2 {

class ServerConnection final : public std::enable_shared_from_this<ServerConnection>,
                               public http::ManagedConnection {
 public:
  using TlsStream = boost::asio::ssl::stream<boost::asio::ip::tcp::socket>;

  /// Cleartext (h2c): `initial` holds bytes already read from the socket (the preface).
  ServerConnection(boost::asio::ip::tcp::socket&& socket, std::string initial,
                   const http::ServerLimits& limits, const ServerSettings& settings,
                   http::ConnectionInfo info, http::StreamHandler& handler,
                   http::ConnectionRegistry& registry);
  /// Over TLS: `tls` has completed its handshake and ALPN chose h2.
  ServerConnection(std::unique_ptr<TlsStream> tls, const http::ServerLimits& limits,
                   const ServerSettings& settings, http::ConnectionInfo info,
                   http::StreamHandler& handler, http::ConnectionRegistry& registry);
  ~ServerConnection();

  /// Starts serving; the connection keeps itself alive until it closes.
  void start();

  /// Drain: GOAWAY, let open streams finish, then close.
  void shutdown_when_idle() noexcept override;
  void abort() noexcept override;

  class Stream;
  struct Callbacks;

 private:
  friend class Stream;
  friend struct Callbacks;

  boost::asio::awaitable<void> run();
  boost::asio::awaitable<void> write_loop();
  boost::asio::awaitable<void> serve_stream(std::shared_ptr<Stream> stream);
  void init_session();
  void receive(const char* data, std::size_t n);
  void terminate(std::uint32_t error_code, std::string_view why) noexcept;
  void signal_write() noexcept;
  bool session_over() const noexcept;
  void close() noexcept;
  void send_final_goaway() noexcept;
  boost::asio::ip::tcp::socket& lowest() noexcept { return tls_ ? tls_->next_layer() : socket_; }

  // Called from nghttp2 callbacks.
  int on_begin_headers(std::int32_t stream_id);
  int on_begin_frame(std::uint8_t type, std::uint8_t flags, std::size_t length);
  void on_headers_done(Stream& s, bool end_stream);

  boost::asio::ip::tcp::socket socket_;  // cleartext (unused with TLS)
  std::unique_ptr<TlsStream> tls_;
  std::string initial_;
  http::ServerLimits limits_;
  ServerSettings settings_;
  http::ConnectionInfo info_;
  http::StreamHandler& handler_;
  http::ConnectionRegistry& registry_;
  support::Deadline deadline_;        // reads: idle / preface timeout, lingering close
  support::Deadline write_deadline_;  // a write that makes no progress
  boost::asio::steady_timer write_event_;
  boost::asio::steady_timer goaway_timer_;
  nghttp2_session* session_ = nullptr;
  std::map<std::int32_t, std::shared_ptr<Stream>> streams_;  // open nghttp2 streams
  std::string out_;                                          // frames for the next write
  std::uint32_t handlers_ = 0;  // streams whose handler is still running
  // Handlers still running for streams the client reset (or that otherwise closed in error):
  // they may still be cancelling upstream work, so they count against max_concurrent_streams
  // (rapid reset cannot pile up work). A handler finishing a stream that ended normally does
  // not: the client may already use that stream's slot.
  std::uint32_t reset_handlers_ = 0;
  bool write_wake_ = false;
  bool writer_waiting_ = false;
  bool writer_done_ = false;
  bool reading_done_ = false;
  bool terminated_ = false;
  bool closed_ = false;
  bool draining_ = false;
  bool received_frame_ = false;
  // Flood accounting.
  double control_tokens_ = 0;
  std::chrono::steady_clock::time_point control_refill_;
  double reset_tokens_ = 0;
  std::chrono::steady_clock::time_point reset_refill_;
  std::uint32_t empty_run_ = 0;
  bool in_header_block_ = false;  // HEADERS received, END_HEADERS not yet
  std::chrono::steady_clock::time_point header_block_start_;
};

}  // namespace turnpike::http2
