// TLS to the backends of one cluster: an OpenSSL client context (CA bundle or the system store,
// optional client certificate, TLS 1.2+), built on the control thread with each snapshot and
// shared read-only by every worker's pool for that cluster. Per connection, the upstream
// connection sets SNI and the name (or IP) to verify.
#pragma once

#include <string>

#include <boost/asio/ssl/context.hpp>

#include "turnpike/config/config.h"

namespace turnpike::tls {

class ClientContext {
 public:
  /// Throws std::runtime_error naming the file and OpenSSL's reason.
  explicit ClientContext(const config::ClusterTls& settings);
  boost::asio::ssl::context& context() noexcept { return ctx_; }
  const config::ClusterTls& settings() const noexcept { return settings_; }

 private:
  config::ClusterTls settings_;
  boost::asio::ssl::context ctx_;
};

/// Prepares `ssl` for a handshake with a backend: SNI (for a host name) and what to verify
/// (the host name, or the IP address for a literal). `name` is server_name or the endpoint's
/// host as written.
void prepare_client(SSL* ssl, const std::string& name, bool verify);

/// Why a client handshake failed, in words ("certificate verify failed: Hostname mismatch").
std::string client_failure(SSL* ssl, const boost::system::error_code& ec);

}  // namespace turnpike::tls
