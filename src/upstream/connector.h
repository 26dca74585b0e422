// Connection set-up to a backend: TCP connect, then with TLS the handshake that verifies the
// backend as `tls_name` (and asks for h2 by ALPN when the cluster speaks HTTP/2), all under one
// deadline. The client codecs (http1::ClientConnection, http2::ClientConnection) are handed the
// connected stream and do no set-up of their own. Owning worker thread only.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/system/error_code.hpp>

namespace turnpike::tls {
class ClientContext;
}

namespace turnpike::upstream {

using TlsStream = boost::asio::ssl::stream<boost::asio::ip::tcp::socket>;

/// A connected stream: `tls` when the cluster uses TLS, else `socket`. On failure `ec` says why
/// (timed_out past the deadline; a TLS or ALPN failure is also logged with its reason).
struct Connection {
  explicit Connection(const boost::asio::any_io_executor& ex) : socket(ex) {}
  boost::system::error_code ec;
  boost::asio::ip::tcp::socket socket;
  std::unique_ptr<TlsStream> tls;
};

/// `h2`: with TLS, ALPN must select h2 (the cluster's protocol is h2). `label` names the
/// endpoint in log lines; `quiet`: no log line of its own (health checks report failures as
/// transitions, not on every attempt).
boost::asio::awaitable<Connection> connect(const boost::asio::ip::tcp::endpoint& endpoint,
                                           std::chrono::milliseconds timeout,
                                           tls::ClientContext* tls, const std::string& tls_name,
                                           bool h2, std::string_view label, bool quiet = false);

}  // namespace turnpike::upstream
