// TLS termination settings of one listener, compiled into OpenSSL contexts: one SSL_CTX per
// certificate, chosen by SNI against the certificates' SAN names (the first is the default),
// ALPN, minimum version and ciphers, client-certificate verification, and stateless session
// tickets whose keys rotate every hour without any state shared between workers. Built on the
// control thread with each snapshot; used read-only by every worker (OpenSSL contexts are safe
// to share once configured).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <boost/asio/ssl/context.hpp>

#include "turnpike/config/config.h"

namespace turnpike::tls {

class ServerContext {
 public:
  /// Builds the contexts; throws std::runtime_error naming the file and OpenSSL's reason.
  /// ALPN offers h2 and/or http/1.1 as the listener's protocols say.
  ServerContext(const config::ListenerTls& settings, bool http1, bool h2);
  ~ServerContext();
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  /// The context new connections start with (the default certificate); SNI may move a
  /// connection to another certificate's context during the handshake.
  boost::asio::ssl::context& context() noexcept { return default_; }
  const config::ListenerTls& settings() const noexcept { return settings_; }

 private:
  struct Cert {
    SSL_CTX* ctx = nullptr;  // not owned for the default (owned by default_)
    std::vector<std::string> names;
  };
  static int on_servername(SSL* ssl, int* alert, void* arg);
  SSL_CTX* match(std::string_view server_name) const;

  config::ListenerTls settings_;
  boost::asio::ssl::context default_;
  std::vector<Cert> certs_;
};

/// What a verified client certificate says, for the filter chain and X-Forwarded-Client-Cert.
struct PeerCertificate {
  std::string subject;  // RFC 2253, "CN=client-1,O=Acme"
  std::vector<std::string> dns;
  std::vector<std::string> uri;
  /// Envoy's XFCC element: Subject="...";DNS=...;URI=...
  std::string xfcc() const;
};

/// The verified peer certificate of an established connection, if any.
std::optional<PeerCertificate> peer_certificate(SSL* ssl);

}  // namespace turnpike::tls
