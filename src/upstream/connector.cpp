#include "upstream/connector.h"

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "support/scoped_deadline.h"
#include "tls/client_context.h"

namespace turnpike::upstream {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;

namespace {
constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
}  // namespace

asio::awaitable<Connection> connect(const tcp::endpoint& endpoint,
                                    std::chrono::milliseconds timeout, tls::ClientContext* tls,
                                    const std::string& tls_name, bool h2, std::string_view label,
                                    bool quiet) {
  Connection c(co_await asio::this_coro::executor);
  // Closing the socket ends whichever step is in flight; the deadline cannot outlive this frame.
  support::ScopedDeadline deadline(c.socket.get_executor(), timeout, [&c] {
    error_code ignored;
    tcp::socket& s = c.tls ? c.tls->next_layer() : c.socket;
    s.close(ignored);
  });
  auto [ec] = co_await c.socket.async_connect(endpoint, kAwait);
  if (ec) {
    c.ec = deadline.expired() ? error_code(asio::error::timed_out) : ec;
    co_return c;
  }
  c.socket.set_option(tcp::no_delay(true), ec);
  if (!tls) co_return c;

  c.tls = std::make_unique<TlsStream>(std::move(c.socket), tls->context());
  SSL* ssl = c.tls->native_handle();
  tls::prepare_client(ssl, tls_name, tls->settings().verify);
  if (h2) {
    static constexpr unsigned char kAlpn[] = {2, 'h', '2'};
    SSL_set_alpn_protos(ssl, kAlpn, sizeof kAlpn);
  }
  std::tie(ec) = co_await c.tls->async_handshake(asio::ssl::stream_base::client, kAwait);
  if (ec) {
    const bool timed_out = deadline.expired();
    if (!quiet)
      spdlog::warn("upstream TLS handshake with {} (as '{}') failed: {}", label, tls_name,
                   timed_out ? "timed out" : tls::client_failure(ssl, ec));
    c.ec = timed_out ? error_code(asio::error::timed_out) : ec;
    co_return c;
  }
  if (h2) {
    const unsigned char* alpn = nullptr;
    unsigned int alpn_len = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    if (alpn_len != 2 || alpn[0] != 'h' || alpn[1] != '2') {
      if (!quiet)
        spdlog::warn("upstream {} (as '{}') did not agree to HTTP/2 by ALPN (cluster protocol h2)",
                     label, tls_name);
      c.ec = asio::error::no_protocol_option;
    }
  }
  co_return c;
}

}  // namespace turnpike::upstream
