#include "turnpike/filters/credentials.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "turnpike/config/config.h"
#include "turnpike/config/reader.h"

namespace turnpike::filters {

std::size_t Sha256Hash::operator()(const Sha256& d) const noexcept {
  std::size_t h;
  std::memcpy(&h, d.data(), sizeof h);
  return h;
}

namespace {

const EVP_MD* sha256_md() {
  static const std::unique_ptr<EVP_MD, decltype(&EVP_MD_free)> md(
      EVP_MD_fetch(nullptr, "SHA256", nullptr), &EVP_MD_free);
  if (!md) throw std::runtime_error("OpenSSL has no SHA256");
  return md.get();
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// This thread's digest context, started afresh.
EVP_MD_CTX* sha256_start() {
  thread_local const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                                                 &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex2(ctx.get(), sha256_md(), nullptr) != 1)
    throw std::runtime_error("SHA-256 failed");
  return ctx.get();
}

void sha256_add(EVP_MD_CTX* ctx, const void* data, std::size_t n) {
  if (EVP_DigestUpdate(ctx, data, n) != 1) throw std::runtime_error("SHA-256 failed");
}

Sha256 sha256_finish(EVP_MD_CTX* ctx) {
  Sha256 out{};
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx, out.data(), &len) != 1 || len != out.size())
    throw std::runtime_error("SHA-256 failed");
  return out;
}

}  // namespace

Sha256 sha256(std::string_view data) {
  EVP_MD_CTX* ctx = sha256_start();
  sha256_add(ctx, data.data(), data.size());
  return sha256_finish(ctx);
}

Sha256 sha256_of_parts(std::initializer_list<std::string_view> parts) {
  EVP_MD_CTX* ctx = sha256_start();
  for (const std::string_view part : parts) {
    const std::uint64_t n = part.size();
    sha256_add(ctx, &n, sizeof n);
    sha256_add(ctx, part.data(), part.size());
  }
  return sha256_finish(ctx);
}

std::optional<Sha256> sha256_from_hex(std::string_view hex) {
  Sha256 d{};
  if (hex.size() != 2 * d.size()) return std::nullopt;
  for (std::size_t i = 0; i < d.size(); ++i) {
    const int hi = hex_value(hex[2 * i]);
    const int lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    d[i] = static_cast<unsigned char>(hi << 4 | lo);
  }
  return d;
}

void read_realm(config::Reader& r, const config::Node& n, std::string& out) {
  auto v = r.string(n);
  if (!v) return;
  if (v->find_first_of("\"\\\r\n") != std::string::npos || v->find('\0') != std::string::npos)
    r.error(n, "the realm cannot contain '\"', '\\', CR, LF or NUL");
  else
    out = std::move(*v);
}

void read_consumer_names(config::Reader& r, const config::Node& n, std::vector<std::string>& out) {
  const auto items = r.list(n);
  if (!items) return;
  for (const auto& item : *items) {
    auto name = r.string(item);
    if (!name) continue;
    if (std::find(out.begin(), out.end(), *name) != out.end()) {
      r.error(item, "consumer '" + *name + "' is listed twice");
      continue;
    }
    out.push_back(std::move(*name));
  }
  if (items->empty()) r.error(n, "list at least one consumer (or leave consumers: out)");
}

void validate_consumer_names(const config::Config& config, const std::vector<std::string>& names,
                             bool (*has)(const config::Consumer&), std::string_view what,
                             const std::function<void(std::string_view, std::string)>& error) {
  for (std::size_t i = 0; i < names.size(); ++i) {
    const auto* c = config.find_consumer(names[i]);
    const std::string key = "consumers[" + std::to_string(i) + "]";
    if (c == nullptr)
      error(key, "no consumer named '" + names[i] + "' (see consumers:)");
    else if (!has(*c))
      error(key, "consumer '" + names[i] + "' has no " + std::string(what));
  }
}

bool serves(const std::vector<std::string>& names, std::string_view consumer) noexcept {
  return names.empty() || std::find(names.begin(), names.end(), consumer) != names.end();
}

}  // namespace turnpike::filters
