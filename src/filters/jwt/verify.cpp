#include "filters/jwt/verify.h"

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>

#include <cctype>
#include <cmath>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>

namespace turnpike::filters::jwt {

namespace {

using Json = nlohmann::json;

struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
};
struct EcdsaSigFree {
  void operator()(ECDSA_SIG* s) const noexcept { ECDSA_SIG_free(s); }
};

const EVP_MD* digest_of(Alg a) noexcept {
  switch (a) {
    case Alg::RS256:
    case Alg::PS256:
    case Alg::ES256:
    case Alg::HS256:
      return EVP_sha256();
    case Alg::RS384:
    case Alg::PS384:
    case Alg::ES384:
    case Alg::HS384:
      return EVP_sha384();
    case Alg::RS512:
    case Alg::PS512:
    case Alg::ES512:
    case Alg::HS512:
      return EVP_sha512();
    case Alg::EdDSA:
      return nullptr;
  }
  return nullptr;
}

bool is_hmac(Alg a) noexcept {
  return a == Alg::HS256 || a == Alg::HS384 || a == Alg::HS512;
}
bool is_pss(Alg a) noexcept {
  return a == Alg::PS256 || a == Alg::PS384 || a == Alg::PS512;
}
std::size_t ec_coordinate(Alg a) noexcept {
  return a == Alg::ES256 ? 32 : a == Alg::ES384 ? 48 : a == Alg::ES512 ? 66 : 0;
}

// JWS carries ECDSA signatures as raw r||s (RFC 7518 section 3.4); OpenSSL verifies DER.
bool ecdsa_der(std::string_view raw, std::size_t coord, std::string& der) {
  if (raw.size() != 2 * coord) return false;
  std::unique_ptr<ECDSA_SIG, EcdsaSigFree> sig(ECDSA_SIG_new());
  if (!sig) return false;
  const auto* p = reinterpret_cast<const unsigned char*>(raw.data());
  BIGNUM* r = BN_bin2bn(p, static_cast<int>(coord), nullptr);
  BIGNUM* s = BN_bin2bn(p + coord, static_cast<int>(coord), nullptr);
  if (r == nullptr || s == nullptr || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return false;
  }
  const int len = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (len <= 0) return false;
  der.resize(static_cast<std::size_t>(len));
  auto* out = reinterpret_cast<unsigned char*>(der.data());
  return i2d_ECDSA_SIG(sig.get(), &out) == len;
}

bool verify_with(const ParsedToken& t, const Key& key) {
  const auto* data = reinterpret_cast<const unsigned char*>(t.signing_input.data());
  const std::size_t len = t.signing_input.size();
  if (is_hmac(t.alg)) {
    if (key.secret.empty()) return false;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (HMAC(digest_of(t.alg), key.secret.data(), static_cast<int>(key.secret.size()), data, len,
             mac, &mac_len) == nullptr)
      return false;
    return t.signature.size() == mac_len && CRYPTO_memcmp(mac, t.signature.data(), mac_len) == 0;
  }
  if (!key.pkey) return false;
  std::string der;
  std::string_view sig = t.signature;
  if (const std::size_t coord = ec_coordinate(t.alg); coord != 0) {
    if (!ecdsa_der(t.signature, coord, der)) return false;
    sig = der;
  }
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx) return false;
  EVP_PKEY_CTX* pctx = nullptr;
  if (EVP_DigestVerifyInit(ctx.get(), &pctx, digest_of(t.alg), nullptr, key.pkey.get()) != 1)
    return false;
  if (is_pss(t.alg) && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
                        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))
    return false;
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                          data, len) == 1;
}

// A claim by name; a dotted name ("realm_access.roles") that is not itself a top-level claim
// walks into nested objects.
const Json* find_claim(const Json& payload, const std::string& name) {
  if (const auto it = payload.find(name); it != payload.end()) return &*it;
  if (name.find('.') == std::string::npos) return nullptr;
  const Json* cur = &payload;
  std::size_t start = 0;
  while (cur != nullptr && cur->is_object()) {
    const std::size_t dot = name.find('.', start);
    const std::string part = name.substr(start, dot == std::string::npos ? dot : dot - start);
    const auto it = cur->find(part);
    if (it == cur->end()) return nullptr;
    if (dot == std::string::npos) return &*it;
    cur = &*it;
    start = dot + 1;
  }
  return nullptr;
}

std::string text_of(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::string out;
    for (const auto& e : v) {
      if (!out.empty()) out += ',';
      out += e.is_string() ? e.get<std::string>() : e.dump();
    }
    return out;
  }
  return v.dump();
}

void split_spaces(std::string_view s, std::vector<std::string>& out) {
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ')
      ++i;
    std::size_t j = i;
    while (j < s.size() && s[j] != ' ')
      ++j;
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
}

// A NumericDate (RFC 7519 section 2): seconds, possibly fractional. nullopt: not a number.
std::optional<std::int64_t> numeric_date(const Json& v) {
  if (v.is_number_integer()) return v.get<std::int64_t>();
  if (v.is_number_unsigned()) return std::numeric_limits<std::int64_t>::max();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!std::isfinite(d)) return std::nullopt;
    if (d >= 9.2e18) return std::numeric_limits<std::int64_t>::max();
    if (d <= -9.2e18) return std::numeric_limits<std::int64_t>::min();
    return static_cast<std::int64_t>(std::floor(d));
  }
  return std::nullopt;
}

bool header_safe(std::string_view v) {
  for (const char c : v)
    if (c == '\r' || c == '\n' || c == '\0') return false;
  return v.size() <= 8192;
}

}  // namespace

std::string_view describe(Outcome o) noexcept {
  switch (o) {
    case Outcome::Ok:
      return "ok";
    case Outcome::Malformed:
      return "malformed token";
    case Outcome::UnsupportedAlg:
      return "unsupported algorithm";
    case Outcome::UnknownKid:
      return "unknown key id";
    case Outcome::BadSignature:
      return "bad signature";
    case Outcome::Expired:
      return "token expired";
    case Outcome::NotYetValid:
      return "token not yet valid";
    case Outcome::WrongIssuer:
      return "wrong issuer";
    case Outcome::WrongAudience:
      return "wrong audience";
  }
  return "invalid token";
}

Outcome parse_token(std::string_view token, AlgMask allowed, ParsedToken& out) {
  const std::size_t d1 = token.find('.');
  if (d1 == std::string_view::npos) return Outcome::Malformed;
  const std::size_t d2 = token.find('.', d1 + 1);
  if (d2 == std::string_view::npos || token.find('.', d2 + 1) != std::string_view::npos)
    return Outcome::Malformed;  // JWE (five parts) and anything else
  const auto header_b64 = token.substr(0, d1);
  out.payload_b64 = token.substr(d1 + 1, d2 - d1 - 1);
  out.signing_input = token.substr(0, d2);
  if (header_b64.empty() || out.payload_b64.empty()) return Outcome::Malformed;
  const auto header_text = base64url_decode(header_b64);
  auto sig = base64url_decode(token.substr(d2 + 1));
  if (!header_text || !sig) return Outcome::Malformed;
  // The payload is decoded only after the signature verifies; its alphabet is checked now.
  for (const char c : out.payload_b64)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_'))
      return Outcome::Malformed;
  const auto header = Json::parse(*header_text, nullptr, false);
  if (header.is_discarded() || !header.is_object()) return Outcome::Malformed;
  // No header parameter extension is understood, so a critical one means "reject" (RFC 7515
  // section 4.1.11).
  if (header.contains("crit")) return Outcome::Malformed;
  const auto alg_it = header.find("alg");
  if (alg_it == header.end() || !alg_it->is_string()) return Outcome::Malformed;
  const auto alg = alg_from_name(alg_it->get_ref<const std::string&>());
  if (!alg || (allowed & alg_bit(*alg)) == 0) return Outcome::UnsupportedAlg;
  out.alg = *alg;
  if (const auto kid = header.find("kid"); kid != header.end()) {
    if (!kid->is_string()) return Outcome::Malformed;
    out.kid = kid->get<std::string>();
    out.has_kid = true;
  }
  if (sig->empty()) return Outcome::BadSignature;
  out.signature = std::move(*sig);
  return Outcome::Ok;
}

Outcome verify_signature(const ParsedToken& t, const KeySet* const* sets, std::size_t n) {
  const AlgMask want = alg_bit(t.alg);
  bool kid_known = false;
  int tries = 0;
  for (std::size_t s = 0; s < n; ++s) {
    if (sets[s] == nullptr) continue;
    for (const Key& key : sets[s]->keys) {
      if (t.has_kid && !key.kid.empty()) {
        if (key.kid != t.kid) continue;
        kid_known = true;
      }
      if ((key.algs & want) == 0) continue;
      if (tries == kMaxTries) return Outcome::BadSignature;
      ++tries;
      if (verify_with(t, key)) return Outcome::Ok;
    }
  }
  if (tries > 0) return Outcome::BadSignature;
  if (t.has_kid && !kid_known) return Outcome::UnknownKid;
  return Outcome::UnsupportedAlg;
}

Outcome check_claims(const ParsedToken& t, const ClaimRules& rules, std::int64_t now,
                     Identity& out) {
  const auto text = base64url_decode(t.payload_b64);
  if (!text) return Outcome::Malformed;
  const auto payload = Json::parse(*text, nullptr, false);
  if (payload.is_discarded() || !payload.is_object()) return Outcome::Malformed;
  const std::int64_t skew = rules.clock_skew.count();

  if (const auto it = payload.find("exp"); it != payload.end()) {
    const auto exp = numeric_date(*it);
    if (!exp) return Outcome::Malformed;
    // Valid only before exp (RFC 7519 section 4.1.4), with the skew.
    if (*exp < std::numeric_limits<std::int64_t>::max() - skew && now >= *exp + skew)
      return Outcome::Expired;
    out.exp = *exp;
  }
  if (const auto it = payload.find("nbf"); it != payload.end()) {
    const auto nbf = numeric_date(*it);
    if (!nbf) return Outcome::Malformed;
    if (now + skew < *nbf) return Outcome::NotYetValid;
  }
  if (!rules.issuers.empty()) {
    const auto it = payload.find("iss");
    bool ok = false;
    if (it != payload.end() && it->is_string())
      for (const auto& iss : rules.issuers)
        ok = ok || *it == iss;
    if (!ok) return Outcome::WrongIssuer;
  }
  if (!rules.audiences.empty()) {
    const auto it = payload.find("aud");
    bool ok = false;
    auto match = [&](const Json& v) {
      if (!v.is_string()) return;
      for (const auto& aud : rules.audiences)
        ok = ok || v == aud;
    };
    if (it != payload.end()) {
      if (it->is_array()) {
        for (const auto& v : *it)
          match(v);
      } else {
        match(*it);
      }
    }
    if (!ok) return Outcome::WrongAudience;
  }

  out.claims.reserve(payload.size());
  for (const auto& [name, value] : payload.items())
    out.claims.emplace_back(name, value.is_string() ? value.get<std::string>() : value.dump());
  if (const Json* c = find_claim(payload, rules.consumer_claim); c != nullptr) {
    if (c->is_string())
      out.consumer = c->get<std::string>();
    else if (c->is_number())
      out.consumer = c->dump();
  }
  if (const auto it = payload.find("scope"); it != payload.end() && it->is_string()) {
    split_spaces(it->get_ref<const std::string&>(), out.scopes);
  } else if (const auto scp = payload.find("scp"); scp != payload.end()) {
    if (scp->is_string()) {
      split_spaces(scp->get_ref<const std::string&>(), out.scopes);
    } else if (scp->is_array()) {
      for (const auto& v : *scp)
        if (v.is_string()) out.scopes.push_back(v.get<std::string>());
    }
  }
  if (!rules.groups_claim.empty()) {
    if (const Json* g = find_claim(payload, rules.groups_claim); g != nullptr) {
      if (g->is_string()) {
        out.groups.push_back(g->get<std::string>());
      } else if (g->is_array()) {
        for (const auto& v : *g)
          if (v.is_string()) out.groups.push_back(v.get<std::string>());
      }
    }
  }
  for (const auto& [claim, header] : rules.forward_claims) {
    const Json* v = find_claim(payload, claim);
    if (v == nullptr || v->is_null()) continue;
    std::string value = text_of(*v);
    if (header_safe(value)) out.forwarded.emplace_back(header, std::move(value));
  }
  return Outcome::Ok;
}

}  // namespace turnpike::filters::jwt
