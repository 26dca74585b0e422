#include "tls/server_context.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <array>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include <openssl/core_names.h>

namespace turnpike::tls {

namespace {

// Mozilla's "intermediate" TLS 1.2 suites (TLS 1.3 suites are OpenSSL's defaults).
constexpr const char* kDefaultCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384";

std::string openssl_error() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + openssl_error());
}

// ---- session ticket keys ------------------------------------------------------------------
// Keys are derived from a per-process secret and the current hour, so they rotate on their own
// and every worker derives the same ones without sharing anything mutable. A ticket made in
// the previous hour is still accepted (and renewed); older ones fall back to a full handshake.
constexpr auto kTicketKeyLifetime = std::chrono::hours(1);

const std::array<unsigned char, 32>& ticket_secret() {
  static const std::array<unsigned char, 32> secret = [] {
    std::array<unsigned char, 32> s{};
    if (RAND_bytes(s.data(), static_cast<int>(s.size())) != 1) std::abort();
    return s;
  }();
  return secret;
}

void derive(const char* label, std::uint64_t epoch, unsigned char out[32]) {
  // Fetched once: OpenSSL 3 otherwise looks the digest up (under a lock) on every call.
  static EVP_MD* const sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  unsigned char msg[16] = {};
  std::memcpy(msg, label, std::min<std::size_t>(std::strlen(label), 8));
  for (int i = 0; i < 8; ++i)
    msg[8 + i] = static_cast<unsigned char>(epoch >> (56 - 8 * i));
  unsigned int len = 32;
  HMAC(sha256, ticket_secret().data(), static_cast<int>(ticket_secret().size()), msg, sizeof msg,
       out, &len);
}

// The keys of one epoch, derived once per worker thread and hour.
struct EpochKeys {
  std::uint64_t epoch = ~std::uint64_t{0};
  unsigned char name[16];
  unsigned char aes[32];
  unsigned char mac[32];
};

std::uint64_t current_epoch() {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return static_cast<std::uint64_t>(now / kTicketKeyLifetime);
}

// key_name: 8 bytes of epoch, then 8 bytes that identify this process's secret.
void key_name(std::uint64_t epoch, unsigned char name[16]) {
  unsigned char id[32];
  derive("name", epoch, id);
  for (int i = 0; i < 8; ++i)
    name[i] = static_cast<unsigned char>(epoch >> (56 - 8 * i));
  std::memcpy(name + 8, id, 8);
}

const EpochKeys& keys_for(std::uint64_t epoch) {
  thread_local EpochKeys current, previous;
  if (current.epoch == epoch) return current;
  if (previous.epoch == epoch) return previous;
  EpochKeys& k = epoch > current.epoch || current.epoch == ~std::uint64_t{0} ? current : previous;
  if (&k == &current) previous = current;
  k.epoch = epoch;
  key_name(epoch, k.name);
  derive("aes", epoch, k.aes);
  derive("mac", epoch, k.mac);
  return k;
}

int ticket_key_cb(SSL*, unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher,
                  EVP_MAC_CTX* mac, int enc) {
  std::uint64_t epoch = current_epoch();
  int result = 1;
  if (enc) {
    std::memcpy(name, keys_for(epoch).name, 16);
    if (RAND_bytes(iv, 16) != 1) return -1;
  } else {
    std::uint64_t ticket_epoch = 0;
    for (int i = 0; i < 8; ++i)
      ticket_epoch = (ticket_epoch << 8) | name[i];
    if (ticket_epoch + 1 == epoch)
      result = 2;  // valid, but issue a ticket under the current key
    else if (ticket_epoch != epoch)
      return 0;  // expired (or not ours): full handshake
    if (std::memcmp(keys_for(ticket_epoch).name, name, 16) != 0) return 0;  // not ours
    epoch = ticket_epoch;
  }
  const EpochKeys& k = keys_for(epoch);
  unsigned char hmac_key[32];
  std::memcpy(hmac_key, k.mac, sizeof hmac_key);
  const unsigned char* aes = k.aes;
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, hmac_key, sizeof hmac_key),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end(),
  };
  if (EVP_MAC_CTX_set_params(mac, params) != 1) return -1;
  const int ok = enc ? EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, aes, iv)
                     : EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, aes, iv);
  return ok == 1 ? result : -1;
}

// ALPN in the listener's protocols: h2 first when the listener speaks it. No overlap is not an
// error: the client falls back to HTTP/1.1 without ALPN.
constexpr unsigned char kAlpnH2[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
constexpr unsigned char kAlpnHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
constexpr unsigned char kAlpnH2Only[] = {2, 'h', '2'};

struct AlpnList {
  const unsigned char* data;
  unsigned int size;
};
constexpr AlpnList kAlpnLists[] = {
    {kAlpnHttp11, sizeof kAlpnHttp11},  // http1
    {kAlpnH2Only, sizeof kAlpnH2Only},  // h2
    {kAlpnH2, sizeof kAlpnH2},          // both
};

int alpn_select(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void* arg) {
  const auto* list = static_cast<const AlpnList*>(arg);
  unsigned char* selected = nullptr;
  // Server preference: SSL_select_next_proto walks its first list and takes the first entry
  // the client also offers.
  if (SSL_select_next_proto(&selected, outlen, list->data, list->size, in, inlen) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

std::vector<std::string> certificate_names(X509* x) {
  std::vector<std::string> names;
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
  if (sans) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans, i);
      if (gn->type != GEN_DNS) continue;
      const ASN1_IA5STRING* s = gn->d.dNSName;
      names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                         static_cast<std::size_t>(ASN1_STRING_length(s)));
    }
    GENERAL_NAMES_free(sans);
  }
  if (names.empty()) {  // no SAN: the subject's CN, as old certificates have it
    char cn[256];
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn) > 0)
      names.emplace_back(cn);
  }
  for (auto& n : names)
    for (auto& c : n)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return names;
}

bool name_matches(std::string_view pattern, std::string_view host) {
  if (pattern == host) return true;
  // "*.example.com" matches exactly one label before ".example.com".
  if (pattern.size() > 2 && pattern.starts_with("*.")) {
    const std::string_view suffix = pattern.substr(1);
    if (host.size() > suffix.size() && host.ends_with(suffix)) {
      const std::string_view label = host.substr(0, host.size() - suffix.size());
      return label.find('.') == std::string_view::npos;
    }
  }
  return false;
}

void configure(SSL_CTX* ctx, const config::ListenerTls& s, const config::TlsCertificate& cert,
               const AlpnList* alpn) {
  SSL_CTX_set_min_proto_version(ctx, s.min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_options(
      ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_set_cipher_list(ctx, s.ciphers.empty() ? kDefaultCiphers : s.ciphers.c_str()) != 1)
    fail("ciphers '" + s.ciphers + "'");
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.cert.c_str()) != 1) fail(cert.cert);
  if (SSL_CTX_use_PrivateKey_file(ctx, cert.key.c_str(), SSL_FILETYPE_PEM) != 1) fail(cert.key);
  if (SSL_CTX_check_private_key(ctx) != 1) fail(cert.key);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select, const_cast<AlpnList*>(alpn));
  static constexpr unsigned char kSid[] = "turnpike";
  SSL_CTX_set_session_id_context(ctx, kSid, sizeof kSid - 1);
  // No server-side session cache (it is shared and locked): resumption is by ticket only.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (s.session_tickets) {
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
  } else {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
  }
  if (!s.client_ca.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, s.client_ca.c_str(), nullptr) != 1) fail(s.client_ca);
    STACK_OF(X509_NAME)* cas = SSL_load_client_CA_file(s.client_ca.c_str());
    if (!cas) fail(s.client_ca);
    SSL_CTX_set_client_CA_list(ctx, cas);
    SSL_CTX_set_verify(
        ctx, SSL_VERIFY_PEER | (s.require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        nullptr);
  }
}

}  // namespace

ServerContext::ServerContext(const config::ListenerTls& settings, bool http1, bool h2)
    : settings_(settings), default_(boost::asio::ssl::context::tls_server) {
  ERR_clear_error();
  const AlpnList* alpn = &kAlpnLists[h2 ? (http1 ? 2 : 1) : 0];
  try {
    for (std::size_t i = 0; i < settings_.certificates.size(); ++i) {
      Cert c;
      if (i == 0) {
        c.ctx = default_.native_handle();
      } else {
        c.ctx = SSL_CTX_new(TLS_server_method());
        if (!c.ctx) fail("SSL_CTX_new");
      }
      certs_.push_back(c);
      configure(certs_.back().ctx, settings_, settings_.certificates[i], alpn);
      certs_.back().names = certificate_names(SSL_CTX_get0_certificate(certs_.back().ctx));
    }
    if (certs_.empty()) throw std::runtime_error("no certificate");
  } catch (...) {
    for (std::size_t i = 1; i < certs_.size(); ++i)
      SSL_CTX_free(certs_[i].ctx);
    throw;
  }
  SSL_CTX_set_tlsext_servername_callback(default_.native_handle(), on_servername);
  SSL_CTX_set_tlsext_servername_arg(default_.native_handle(), this);
}

ServerContext::~ServerContext() {
  for (std::size_t i = 1; i < certs_.size(); ++i)
    SSL_CTX_free(certs_[i].ctx);
}

SSL_CTX* ServerContext::match(std::string_view server_name) const {
  std::string host(server_name);
  for (auto& ch : host)
    ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  // Exact names first, then wildcards, in certificate order.
  for (const auto& c : certs_)
    for (const auto& n : c.names)
      if (n == host) return c.ctx;
  for (const auto& c : certs_)
    for (const auto& n : c.names)
      if (name_matches(n, host)) return c.ctx;
  return nullptr;
}

int ServerContext::on_servername(SSL* ssl, int*, void* arg) {
  const auto* self = static_cast<const ServerContext*>(arg);
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name) return SSL_TLSEXT_ERR_OK;  // no SNI: the default certificate
  SSL_CTX* ctx = self->match(name);
  if (ctx && ctx != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, ctx);
  return SSL_TLSEXT_ERR_OK;  // unknown name: the default certificate
}

std::string PeerCertificate::xfcc() const {
  std::string out = "Subject=\"";
  for (char c : subject) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  for (const auto& d : dns)
    out += ";DNS=" + d;
  for (const auto& u : uri)
    out += ";URI=" + u;
  return out;
}

std::optional<PeerCertificate> peer_certificate(SSL* ssl) {
  X509* x = SSL_get0_peer_certificate(ssl);
  if (!x || SSL_get_verify_result(ssl) != X509_V_OK) return std::nullopt;
  PeerCertificate pc;
  BIO* bio = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(bio, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  pc.subject.assign(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
  if (sans) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans, i);
      if (gn->type != GEN_DNS && gn->type != GEN_URI) continue;
      const ASN1_IA5STRING* s =
          gn->type == GEN_DNS ? gn->d.dNSName : gn->d.uniformResourceIdentifier;
      std::string v(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                    static_cast<std::size_t>(ASN1_STRING_length(s)));
      (gn->type == GEN_DNS ? pc.dns : pc.uri).push_back(std::move(v));
    }
    GENERAL_NAMES_free(sans);
  }
  return pc;
}

}  // namespace turnpike::tls
