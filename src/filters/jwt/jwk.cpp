#include "filters/jwt/jwk.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include <array>
#include <nlohmann/json.hpp>

namespace turnpike::filters::jwt {

namespace {

constexpr std::array<std::string_view, kAlgCount> kAlgNames = {
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512",
};

constexpr AlgMask kRsaAlgs = alg_bit(Alg::RS256) | alg_bit(Alg::RS384) | alg_bit(Alg::RS512) |
                             alg_bit(Alg::PS256) | alg_bit(Alg::PS384) | alg_bit(Alg::PS512);

// Decoded value of each base64url character, -1 outside the alphabet.
constexpr std::array<signed char, 256> make_table() {
  std::array<signed char, 256> t{};
  for (auto& v : t)
    v = -1;
  constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (std::size_t i = 0; i < kAlphabet.size(); ++i)
    t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<signed char>(i);
  return t;
}
constexpr auto kTable = make_table();

struct BldFree {
  void operator()(OSSL_PARAM_BLD* b) const noexcept { OSSL_PARAM_BLD_free(b); }
};
struct ParamFree {
  void operator()(OSSL_PARAM* p) const noexcept { OSSL_PARAM_free(p); }
};
struct CtxFree {
  void operator()(EVP_PKEY_CTX* c) const noexcept { EVP_PKEY_CTX_free(c); }
};
struct BnFree {
  void operator()(BIGNUM* b) const noexcept { BN_free(b); }
};

std::shared_ptr<EVP_PKEY> adopt(EVP_PKEY* p) {
  return std::shared_ptr<EVP_PKEY>(p, PkeyFree{});
}

// Builds a public key of `type` ("RSA", "EC") from OSSL params; null on failure.
std::shared_ptr<EVP_PKEY> from_params(const char* type, OSSL_PARAM_BLD* bld) {
  std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(bld));
  if (!params) return nullptr;
  std::unique_ptr<EVP_PKEY_CTX, CtxFree> ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1) return nullptr;
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) return nullptr;
  return adopt(raw);
}

bool public_check(EVP_PKEY* pkey) {
  std::unique_ptr<EVP_PKEY_CTX, CtxFree> ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey, nullptr));
  return ctx && EVP_PKEY_public_check(ctx.get()) == 1;
}

// A base64url member of a JWK; sets `err` when missing or not base64url.
std::optional<std::string> member(const nlohmann::json& jwk, const char* name, std::string& err) {
  const auto it = jwk.find(name);
  if (it == jwk.end() || !it->is_string()) {
    err = std::string("no \"") + name + "\" string";
    return std::nullopt;
  }
  auto bytes = base64url_decode(it->get_ref<const std::string&>());
  if (!bytes || bytes->empty()) {
    err = std::string("\"") + name + "\" is not base64url";
    return std::nullopt;
  }
  return bytes;
}

std::shared_ptr<EVP_PKEY> rsa_key(const nlohmann::json& jwk, std::string& err) {
  auto n = member(jwk, "n", err);
  if (!n) return nullptr;
  auto e = member(jwk, "e", err);
  if (!e) return nullptr;
  if (e->size() > 8) {
    err = "\"e\" is too large";
    return nullptr;
  }
  std::unique_ptr<BIGNUM, BnFree> bn_n(BN_bin2bn(reinterpret_cast<const unsigned char*>(n->data()),
                                                 static_cast<int>(n->size()), nullptr));
  std::unique_ptr<BIGNUM, BnFree> bn_e(BN_bin2bn(reinterpret_cast<const unsigned char*>(e->data()),
                                                 static_cast<int>(e->size()), nullptr));
  std::unique_ptr<OSSL_PARAM_BLD, BldFree> bld(OSSL_PARAM_BLD_new());
  if (!bn_n || !bn_e || !bld ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
    err = "cannot build the RSA key";
    return nullptr;
  }
  auto pkey = from_params("RSA", bld.get());
  if (!pkey) {
    err = "not a valid RSA public key";
    return nullptr;
  }
  if (EVP_PKEY_get_bits(pkey.get()) < 2048) {
    err = "RSA key shorter than 2048 bits";
    return nullptr;
  }
  return pkey;
}

std::shared_ptr<EVP_PKEY> ec_key(const nlohmann::json& jwk, std::string_view crv, std::size_t coord,
                                 std::string& err) {
  auto x = member(jwk, "x", err);
  if (!x) return nullptr;
  auto y = member(jwk, "y", err);
  if (!y) return nullptr;
  // RFC 7518 wants full-length coordinates, but some issuers (PyJWT before 2.8, among others)
  // drop leading zero bytes, about one key in 128. Such a coordinate is the same number:
  // left-pad it. A longer one is refused; the point is checked to be on the curve below.
  if (x->size() > coord || y->size() > coord || x->empty() || y->empty()) {
    err = "\"x\"/\"y\" have the wrong length for " + std::string(crv);
    return nullptr;
  }
  x->insert(0, coord - x->size(), '\0');
  y->insert(0, coord - y->size(), '\0');
  std::string point;
  point.reserve(1 + 2 * coord);
  point += '\x04';  // uncompressed
  point += *x;
  point += *y;
  std::unique_ptr<OSSL_PARAM_BLD, BldFree> bld(OSSL_PARAM_BLD_new());
  const std::string group(crv);
  if (!bld ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group.c_str(), 0) !=
          1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    err = "cannot build the EC key";
    return nullptr;
  }
  auto pkey = from_params("EC", bld.get());
  if (!pkey || !public_check(pkey.get())) {
    err = "not a valid " + group + " public key (point not on the curve?)";
    return nullptr;
  }
  return pkey;
}

std::shared_ptr<EVP_PKEY> okp_key(const nlohmann::json& jwk, int type, std::size_t len,
                                  std::string& err) {
  auto x = member(jwk, "x", err);
  if (!x) return nullptr;
  if (x->size() != len) {
    err = "\"x\" has the wrong length";
    return nullptr;
  }
  EVP_PKEY* raw = EVP_PKEY_new_raw_public_key(
      type, nullptr, reinterpret_cast<const unsigned char*>(x->data()), x->size());
  if (raw == nullptr) {
    err = "not a valid OKP public key";
    return nullptr;
  }
  return adopt(raw);
}

AlgMask hmac_algs(std::size_t len) {
  AlgMask m = 0;
  if (len >= 32) m |= alg_bit(Alg::HS256);
  if (len >= 48) m |= alg_bit(Alg::HS384);
  if (len >= 64) m |= alg_bit(Alg::HS512);
  return m;
}

// One JWK. Returns false with `err` (malformed) or `note` (fine, not a signature key).
bool read_key(const nlohmann::json& jwk, Key& key, std::string& err, std::string& note) {
  if (!jwk.is_object()) {
    err = "not a JSON object";
    return false;
  }
  if (const auto kid = jwk.find("kid"); kid != jwk.end()) {
    if (!kid->is_string()) {
      err = "\"kid\" is not a string";
      return false;
    }
    key.kid = kid->get<std::string>();
  }
  if (const auto use = jwk.find("use"); use != jwk.end() && *use != "sig") {
    note = "\"use\" is not \"sig\"";
    return false;
  }
  if (const auto ops = jwk.find("key_ops"); ops != jwk.end() && ops->is_array()) {
    bool verify = false;
    for (const auto& op : *ops)
      verify = verify || op == "verify";
    if (!verify) {
      note = "\"key_ops\" has no \"verify\"";
      return false;
    }
  }
  const auto kty_it = jwk.find("kty");
  if (kty_it == jwk.end() || !kty_it->is_string()) {
    err = "no \"kty\" string";
    return false;
  }
  const std::string& kty = kty_it->get_ref<const std::string&>();
  std::string crv;
  if (const auto c = jwk.find("crv"); c != jwk.end() && c->is_string()) crv = c->get<std::string>();

  AlgMask family = 0;
  if (kty == "RSA") {
    key.pkey = rsa_key(jwk, err);
    family = kRsaAlgs;
  } else if (kty == "EC") {
    if (crv == "P-256") {
      key.pkey = ec_key(jwk, crv, 32, err);
      family = alg_bit(Alg::ES256);
    } else if (crv == "P-384") {
      key.pkey = ec_key(jwk, crv, 48, err);
      family = alg_bit(Alg::ES384);
    } else if (crv == "P-521") {
      key.pkey = ec_key(jwk, crv, 66, err);
      family = alg_bit(Alg::ES512);
    } else {
      note = "unsupported EC curve '" + crv + "'";
      return false;
    }
  } else if (kty == "OKP") {
    if (crv == "Ed25519") {
      key.pkey = okp_key(jwk, EVP_PKEY_ED25519, 32, err);
    } else if (crv == "Ed448") {
      key.pkey = okp_key(jwk, EVP_PKEY_ED448, 57, err);
    } else {
      note = "OKP curve '" + crv + "' is not a signature curve";
      return false;
    }
    family = alg_bit(Alg::EdDSA);
  } else if (kty == "oct") {
    auto k = member(jwk, "k", err);
    if (!k) return false;
    if (k->size() < 32) {
      err = "HMAC key shorter than 32 bytes";
      return false;
    }
    key.secret = std::move(*k);
    family = hmac_algs(key.secret.size());
  } else {
    note = "unsupported kty '" + kty + "'";
    return false;
  }
  if (!err.empty()) return false;

  key.algs = family;
  if (const auto a = jwk.find("alg"); a != jwk.end()) {
    const auto name = a->is_string() ? a->get<std::string>() : a->dump();
    const auto alg = alg_from_name(name);
    if (!alg) {
      note = "\"alg\" '" + name + "' is not a signature algorithm";
      return false;
    }
    if ((family & alg_bit(*alg)) == 0) {
      err = "\"alg\" " + name + " does not fit kty " + kty + (crv.empty() ? "" : " " + crv) +
            (kty == "oct" ? " of this length" : "");
      return false;
    }
    key.algs = alg_bit(*alg);
  }
  return true;
}

}  // namespace

void PkeyFree::operator()(EVP_PKEY* p) const noexcept {
  EVP_PKEY_free(p);
}

std::optional<Alg> alg_from_name(std::string_view name) noexcept {
  for (int i = 0; i < kAlgCount; ++i)
    if (kAlgNames[static_cast<std::size_t>(i)] == name) return static_cast<Alg>(i);
  return std::nullopt;
}

std::string_view alg_name(Alg a) noexcept {
  return kAlgNames[static_cast<std::size_t>(a)];
}

std::string alg_names(AlgMask m) {
  std::string out;
  for (int i = 0; i < kAlgCount; ++i) {
    if ((m & alg_bit(static_cast<Alg>(i))) == 0) continue;
    if (!out.empty()) out += ", ";
    out += kAlgNames[static_cast<std::size_t>(i)];
  }
  return out;
}

std::optional<std::string> base64url_decode(std::string_view in) {
  while (!in.empty() && in.back() == '=')
    in.remove_suffix(1);
  if (in.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(in.size() * 3 / 4);
  std::uint32_t acc = 0;
  int bits = 0;
  for (const char c : in) {
    const int v = kTable[static_cast<unsigned char>(c)];
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  // Leftover bits must be zero (a canonical encoding), as RFC 4648 section 3.5 allows
  // decoders to require.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

JwksResult parse_jwks(std::string_view text) {
  JwksResult r;
  const auto doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded()) {
    r.fatal = "not valid JSON";
    return r;
  }
  if (!doc.is_object()) {
    r.fatal = "not a JSON object (a JWKS is {\"keys\": [...]})";
    return r;
  }
  const nlohmann::json* keys = nullptr;
  nlohmann::json single;
  if (const auto it = doc.find("keys"); it != doc.end()) {
    if (!it->is_array()) {
      r.fatal = "\"keys\" is not an array";
      return r;
    }
    keys = &*it;
  } else if (doc.contains("kty")) {
    single = nlohmann::json::array({doc});
    keys = &single;
  } else {
    r.fatal = "no \"keys\" array";
    return r;
  }
  std::size_t i = 0;
  for (const auto& jwk : *keys) {
    Key key;
    std::string err;
    std::string note;
    if (read_key(jwk, key, err, note)) {
      r.set.keys.push_back(std::move(key));
    } else {
      std::string where = "keys[" + std::to_string(i) + "]";
      if (!key.kid.empty()) where += " (kid '" + key.kid + "')";
      if (!err.empty())
        r.errors.push_back(where + ": " + err);
      else
        r.notes.push_back(where + " skipped: " + note);
    }
    ++i;
  }
  return r;
}

Key hmac_key(std::string secret, std::string kid) {
  Key k;
  k.kid = std::move(kid);
  k.algs = hmac_algs(secret.size());
  k.secret = std::move(secret);
  return k;
}

}  // namespace turnpike::filters::jwt
