#include "config/tls_files.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "config/digest.h"

namespace turnpike::config {

namespace {

struct BioFree {
  void operator()(BIO* b) const noexcept { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const noexcept { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const noexcept { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

std::string base_dir(const std::string& config_file) {
  const auto slash = config_file.rfind('/');
  if (slash == std::string::npos) return {};
  return config_file.substr(0, slash + 1);
}

// Reads a referenced file; on failure reports it at `key` and returns nullopt.
std::optional<std::string> read(const std::string& path, const std::string& key,
                                Diagnostics& diag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    diag.error(key, diag.loc(key), "cannot read '" + path + "': " + std::strerror(errno));
    return std::nullopt;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return std::move(ss).str();
}

// The certificates in a PEM text, in order (leaf first for a chain).
std::vector<X509Ptr> certificates(const std::string& pem) {
  std::vector<X509Ptr> out;
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
    out.emplace_back(x);
  ERR_clear_error();  // the read that ends the loop leaves "no start line" behind
  return out;
}

// A certificate (chain) and its private key; `at` is the key path prefix ("...tls.").
void check_pair(const std::string& cert, const std::string& key_path, const std::string& at,
                Diagnostics& diag, std::vector<std::pair<std::string, std::string>>& digests) {
  const auto cert_pem = read(cert, at + "cert", diag);
  const auto key_pem = read(key_path, at + "key", diag);
  if (cert_pem) digests.emplace_back(cert, sha256_hex(*cert_pem));
  if (key_pem) digests.emplace_back(key_path, sha256_hex(*key_pem));
  if (!cert_pem || !key_pem) return;
  const auto chain = certificates(*cert_pem);
  if (chain.empty()) {
    diag.error(at + "cert", diag.loc(at + "cert"), "'" + cert + "' holds no PEM certificate");
    return;
  }
  BioPtr bio(BIO_new_mem_buf(key_pem->data(), static_cast<int>(key_pem->size())));
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!key) {
    diag.error(at + "key", diag.loc(at + "key"),
               "'" + key_path + "' holds no PEM private key (encrypted keys are not supported)");
    return;
  }
  if (X509_check_private_key(chain.front().get(), key.get()) != 1) {
    ERR_clear_error();
    diag.error(at + "key", diag.loc(at + "key"),
               "'" + key_path + "' does not match the certificate in '" + cert + "'");
  }
}

}  // namespace

std::vector<std::pair<std::string, std::string>> check_referenced_files(Config& config,
                                                                        Diagnostics& diag) {
  std::vector<std::pair<std::string, std::string>> digests;
  const std::string base = base_dir(config.source_file);
  auto resolve = [&](std::string& path) {
    if (!path.empty() && path.front() != '/') path = base + path;
  };
  for (std::size_t li = 0; li < config.listeners.size(); ++li) {
    auto& tls = config.listeners[li].tls;
    if (!tls) continue;
    const std::string prefix = "listeners[" + std::to_string(li) + "].tls.";
    for (std::size_t ci = 0; ci < tls->certificates.size(); ++ci) {
      TlsCertificate& tc = tls->certificates[ci];
      const std::string at = prefix + "certificates[" + std::to_string(ci) + "].";
      if (tc.cert.empty() || tc.key.empty()) continue;  // reported by the loader
      resolve(tc.cert);
      resolve(tc.key);
      check_pair(tc.cert, tc.key, at, diag, digests);
    }
    if (!tls->client_ca.empty()) {
      resolve(tls->client_ca);
      const std::string key = prefix + "client_ca";
      if (const auto pem = read(tls->client_ca, key, diag)) {
        digests.emplace_back(tls->client_ca, sha256_hex(*pem));
        if (certificates(*pem).empty())
          diag.error(key, diag.loc(key), "'" + tls->client_ca + "' holds no PEM certificate");
      }
    }
  }
  for (std::size_t ci = 0; ci < config.clusters.size(); ++ci) {
    auto& tls = config.clusters[ci].tls;
    if (!tls) continue;
    const std::string at = "clusters[" + std::to_string(ci) + "].tls.";
    if (!tls->ca.empty()) {
      resolve(tls->ca);
      if (const auto pem = read(tls->ca, at + "ca", diag)) {
        digests.emplace_back(tls->ca, sha256_hex(*pem));
        if (certificates(*pem).empty())
          diag.error(at + "ca", diag.loc(at + "ca"), "'" + tls->ca + "' holds no PEM certificate");
      }
    }
    if (tls->cert.empty() || tls->key.empty()) continue;
    resolve(tls->cert);
    resolve(tls->key);
    check_pair(tls->cert, tls->key, at, diag, digests);
  }
  // Filter files (JWKS, secrets) were read and checked by their parsers, which report problems
  // at their own keys; here they only join the digest (one that vanished since: no digest,
  // and the watcher sees it come back).
  for (const auto& f : config.filters) {
    if (!f.settings) continue;
    for (const auto& path : f.settings->files()) {
      std::ifstream in(path, std::ios::binary);
      std::ostringstream text;
      if (in && (text << in.rdbuf())) digests.emplace_back(path, sha256_hex(text.str()));
    }
  }
  return digests;
}

std::vector<std::string> Config::referenced_files() const {
  std::vector<std::string> out;
  for (const auto& l : listeners) {
    if (!l.tls) continue;
    for (const auto& c : l.tls->certificates) {
      out.push_back(c.cert);
      out.push_back(c.key);
    }
    if (!l.tls->client_ca.empty()) out.push_back(l.tls->client_ca);
  }
  for (const auto& c : clusters) {
    if (!c.tls) continue;
    for (const std::string* f : {&c.tls->ca, &c.tls->cert, &c.tls->key})
      if (!f->empty()) out.push_back(*f);
  }
  for (const auto& f : filters)
    if (f.settings)
      for (auto& path : f.settings->files())
        out.push_back(std::move(path));
  return out;
}

}  // namespace turnpike::config
