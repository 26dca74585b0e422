#include "tls/client_context.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <stdexcept>

#include <boost/asio/ip/address.hpp>

namespace turnpike::tls {

namespace {
[[noreturn]] void fail(const std::string& what) {
  std::string reason;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!reason.empty()) reason += "; ";
    reason += buf;
  }
  throw std::runtime_error(what + ": " + (reason.empty() ? "unknown OpenSSL error" : reason));
}
}  // namespace

ClientContext::ClientContext(const config::ClusterTls& settings)
    : settings_(settings), ctx_(boost::asio::ssl::context::tls_client) {
  SSL_CTX* ctx = ctx_.native_handle();
  ERR_clear_error();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (settings_.verify) {
    if (!settings_.ca.empty()) {
      if (SSL_CTX_load_verify_locations(ctx, settings_.ca.c_str(), nullptr) != 1)
        fail(settings_.ca);
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      fail("the system CA store");
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (!settings_.cert.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, settings_.cert.c_str()) != 1) fail(settings_.cert);
    if (SSL_CTX_use_PrivateKey_file(ctx, settings_.key.c_str(), SSL_FILETYPE_PEM) != 1)
      fail(settings_.key);
    if (SSL_CTX_check_private_key(ctx) != 1) fail(settings_.key);
  }
  static constexpr unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(ctx, kHttp11, sizeof kHttp11);
}

void prepare_client(SSL* ssl, const std::string& name, bool verify) {
  boost::system::error_code ec;
  const auto ip = boost::asio::ip::make_address(name, ec);
  if (ec) SSL_set_tlsext_host_name(ssl, name.c_str());  // SNI is for host names only
  if (!verify) return;
  if (ec) {
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    SSL_set1_host(ssl, name.c_str());
  } else {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ip.to_string().c_str());
  }
}

std::string client_failure(SSL* ssl, const boost::system::error_code& ec) {
  const long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK)
    return std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
  return ec.message();
}

}  // namespace turnpike::tls
