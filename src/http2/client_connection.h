// HTTP/2 upstream connection (h2 over TLS with ALPN, h2c with prior knowledge) on nghttp2: many
// request streams multiplexed on one connection to a backend, each an http::ClientStream for
// the proxy. upstream/ connects (and does the TLS handshake) and then hands the stream over
// with start(); a stream may be opened before that, and its request waits. Response bodies are
// buffered only up to the stream's flow-control window, returned as the proxy reads them. Owning
// worker thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>

#include "http2/settings.h"
#include "turnpike/http/client_stream.h"

struct nghttp2_session;

namespace turnpike::http2 {

class ClientConnection final : public std::enable_shared_from_this<ClientConnection> {
 public:
  using Clock = std::chrono::steady_clock;
  using TlsStream = boost::asio::ssl::stream<boost::asio::ip::tcp::socket>;

  /// Not yet connected: streams opened now wait for start() or connect_failed().
  ClientConnection(const boost::asio::any_io_executor& ex, const ClientSettings& settings,
                   std::string label);
  ~ClientConnection();

  /// The connection is up (h2c: a connected socket; h2: TLS done with ALPN h2): serve it.
  void start(boost::asio::ip::tcp::socket&& socket);
  void start(std::unique_ptr<TlsStream> tls);
  /// Connecting failed: waiting streams fail with `ec`.
  void connect_failed(const boost::system::error_code& ec);

  /// A new stream may be opened: not failed, closed or told to go away, and below the
  /// concurrent-stream cap (ours and the backend's).
  bool has_capacity() const noexcept;
  bool is_closed() const noexcept { return closed_; }
  std::size_t active_streams() const noexcept { return streams_; }
  /// Whether a stream already completed here (a failure may then be a stale connection).
  bool served() const noexcept { return served_ > 0; }
  Clock::time_point idle_since() const noexcept { return idle_since_; }

  /// Opens a stream for one request.
  std::shared_ptr<http::ClientStream> open_stream();
  /// Called each time a stream ends (room for another): the pool wakes a request waiting for
  /// one at max_connections.
  void on_stream_done(std::function<void()> f) { on_stream_done_ = std::move(f); }
  /// No new streams; GOAWAY and close once the open ones are done.
  void shutdown() noexcept;
  /// Closes now; open streams fail.
  void close() noexcept;

  class Stream;
  struct Callbacks;

 private:
  friend class Stream;
  friend struct Callbacks;

  void begin();
  boost::asio::awaitable<void> run();
  boost::asio::awaitable<void> write_loop();
  /// Waits until connected (or failed); the error if it failed.
  boost::asio::awaitable<boost::system::error_code> wait_ready(Clock::time_point deadline);
  void init_session();
  void signal_write() noexcept;
  void stream_done() noexcept;
  void fail(const boost::system::error_code& ec) noexcept;
  boost::asio::ip::tcp::socket& lowest() noexcept { return tls_ ? tls_->next_layer() : socket_; }

  boost::asio::ip::tcp::socket socket_;
  std::unique_ptr<TlsStream> tls_;
  ClientSettings settings_;
  std::string label_;
  boost::asio::steady_timer write_event_;
  boost::asio::steady_timer ready_event_;
  nghttp2_session* session_ = nullptr;
  std::map<std::int32_t, Stream*> by_id_;
  std::string out_;
  boost::system::error_code error_;  // why the connection failed
  std::function<void()> on_stream_done_;
  std::size_t streams_ = 0;  // open Stream objects
  std::uint64_t served_ = 0;
  std::uint32_t peer_max_streams_ = 100;
  Clock::time_point idle_since_ = Clock::now();
  bool connecting_ = true;
  bool ready_ = false;
  bool closed_ = false;
  bool going_away_ = false;
  bool write_wake_ = false;
  bool writer_waiting_ = false;
  bool tls_used_ = false;
};

}  // namespace turnpike::http2
