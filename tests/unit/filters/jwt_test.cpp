// The jwt filter's parts with keys generated here by OpenSSL: base64url, JWK import, every
// signature algorithm (and tampering), the claim checks, the per-worker token cache, and the
// filter itself built from inline YAML, including a JWKS fetched through a recording Upstreams
// (the first fetch parks requests, a rotation on an unknown kid, the forged-kid rate limit, a
// failed refresh keeping the last keys).
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include <stdlib.h>

#include "filters/jwt/jwk.h"
#include "filters/jwt/token_cache.h"
#include "filters/jwt/verify.h"
#include "turnpike/config/config.h"
#include "turnpike/filters/registry.h"
#include "unit/filters/recording_callbacks.h"

namespace turnpike::filters {
namespace {

using Json = nlohmann::json;
using jwt::Alg;
using jwt::Outcome;

std::string b64url(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kAlphabet[(acc >> bits) & 63];
    }
  }
  if (bits > 0) out += kAlphabet[(acc << (6 - bits)) & 63];
  return out;
}

std::int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct PkeyPtr {
  EVP_PKEY* p = nullptr;
  PkeyPtr() = default;
  explicit PkeyPtr(EVP_PKEY* k) : p(k) {}
  PkeyPtr(const PkeyPtr&) = delete;
  PkeyPtr& operator=(const PkeyPtr&) = delete;
  ~PkeyPtr() { EVP_PKEY_free(p); }
};

std::string bn_param(EVP_PKEY* k, const char* name, std::size_t pad = 0) {
  BIGNUM* bn = nullptr;
  EXPECT_EQ(EVP_PKEY_get_bn_param(k, name, &bn), 1) << name;
  std::string out(std::max<std::size_t>(pad, static_cast<std::size_t>(BN_num_bytes(bn))), '\0');
  BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(out.size()));
  BN_free(bn);
  return out;
}

// The public JWK of a generated key.
Json jwk_of(EVP_PKEY* k, const std::string& kid) {
  Json j;
  j["kid"] = kid;
  if (EVP_PKEY_is_a(k, "RSA")) {
    j["kty"] = "RSA";
    j["n"] = b64url(bn_param(k, OSSL_PKEY_PARAM_RSA_N));
    j["e"] = b64url(bn_param(k, OSSL_PKEY_PARAM_RSA_E));
  } else if (EVP_PKEY_is_a(k, "EC")) {
    const int bits = EVP_PKEY_get_bits(k);
    const std::size_t coord = static_cast<std::size_t>((bits + 7) / 8);
    j["kty"] = "EC";
    j["crv"] = bits == 256 ? "P-256" : bits == 384 ? "P-384" : "P-521";
    j["x"] = b64url(bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, coord));
    j["y"] = b64url(bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, coord));
  } else {
    unsigned char raw[64];
    std::size_t len = sizeof raw;
    EXPECT_EQ(EVP_PKEY_get_raw_public_key(k, raw, &len), 1);
    j["kty"] = "OKP";
    j["crv"] = "Ed25519";
    j["x"] = b64url(std::string_view(reinterpret_cast<char*>(raw), len));
  }
  return j;
}

const EVP_MD* md_for(Alg a) {
  switch (a) {
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
    default:
      return EVP_sha256();
  }
}

std::string sign(Alg alg, EVP_PKEY* key, const std::string& secret, const std::string& input) {
  const auto* data = reinterpret_cast<const unsigned char*>(input.data());
  if (alg == Alg::HS256 || alg == Alg::HS384 || alg == Alg::HS512) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(md_for(alg), secret.data(), static_cast<int>(secret.size()), data, input.size(), mac,
         &len);
    return std::string(reinterpret_cast<char*>(mac), len);
  }
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  EXPECT_EQ(EVP_DigestSignInit(ctx, &pctx, md_for(alg), nullptr, key), 1);
  if (alg == Alg::PS256 || alg == Alg::PS384 || alg == Alg::PS512) {
    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
  }
  std::size_t len = 0;
  EVP_DigestSign(ctx, nullptr, &len, data, input.size());
  std::string sig(len, '\0');
  EXPECT_EQ(
      EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len, data, input.size()),
      1);
  sig.resize(len);
  EVP_MD_CTX_free(ctx);
  if (alg == Alg::ES256 || alg == Alg::ES384 || alg == Alg::ES512) {
    const std::size_t coord = alg == Alg::ES256 ? 32 : alg == Alg::ES384 ? 48 : 66;
    const auto* p = reinterpret_cast<const unsigned char*>(sig.data());
    ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
    std::string raw(2 * coord, '\0');
    BN_bn2binpad(ECDSA_SIG_get0_r(es), reinterpret_cast<unsigned char*>(raw.data()),
                 static_cast<int>(coord));
    BN_bn2binpad(ECDSA_SIG_get0_s(es), reinterpret_cast<unsigned char*>(raw.data()) + coord,
                 static_cast<int>(coord));
    ECDSA_SIG_free(es);
    return raw;
  }
  return sig;
}

std::string mint(Alg alg, EVP_PKEY* key, const std::string& secret, const Json& claims,
                 const std::string& kid = "") {
  Json header{{"alg", std::string(jwt::alg_name(alg))}, {"typ", "JWT"}};
  if (!kid.empty()) header["kid"] = kid;
  const std::string input = b64url(header.dump()) + "." + b64url(claims.dump());
  return input + "." + b64url(sign(alg, key, secret, input));
}

Json good_claims() {
  return {{"iss", "https://idp"},
          {"aud", "api"},
          {"sub", "alice"},
          {"exp", now_s() + 600},
          {"scope", "read  write"},
          {"groups", {"staff", "ops"}},
          {"realm_access", {{"roles", {"admin"}}}},
          {"n", 7}};
}

class Keys {
 public:
  Keys()
      : rsa(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048))),
        p256(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")),
        p384(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384")),
        p521(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-521")),
        ed(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")),
        secret(64, 'k') {}
  EVP_PKEY* for_alg(Alg a) const {
    switch (a) {
      case Alg::ES256:
        return p256.p;
      case Alg::ES384:
        return p384.p;
      case Alg::ES512:
        return p521.p;
      case Alg::EdDSA:
        return ed.p;
      default:
        return rsa.p;
    }
  }
  std::string kid_for(Alg a) const {
    switch (a) {
      case Alg::ES256:
        return "p256";
      case Alg::ES384:
        return "p384";
      case Alg::ES512:
        return "p521";
      case Alg::EdDSA:
        return "ed";
      case Alg::HS256:
      case Alg::HS384:
      case Alg::HS512:
        return "";
      default:
        return "rsa";
    }
  }
  Json jwks() const {
    return {{"keys",
             {jwk_of(rsa.p, "rsa"),
              jwk_of(p256.p, "p256"),
              jwk_of(p384.p, "p384"),
              jwk_of(p521.p, "p521"),
              jwk_of(ed.p, "ed"),
              {{"kty", "oct"}, {"k", b64url(secret)}}}}};
  }
  PkeyPtr rsa, p256, p384, p521, ed;
  std::string secret;
};

const Keys& keys() {
  static const Keys k;
  return k;
}

// ---- pieces ---------------------------------------------------------------------------------

TEST(JwtBase64url, DecodesAndRejects) {
  EXPECT_EQ(jwt::base64url_decode("aGVsbG8"), "hello");
  EXPECT_EQ(jwt::base64url_decode("aGVsbG8="), "hello");
  EXPECT_EQ(jwt::base64url_decode(""), "");
  EXPECT_EQ(jwt::base64url_decode("-_8"), std::string("\xfb\xff", 2));
  EXPECT_FALSE(jwt::base64url_decode("a"));         // impossible length
  EXPECT_FALSE(jwt::base64url_decode("aGVs+G8"));   // '+' is base64, not base64url
  EXPECT_FALSE(jwt::base64url_decode("aGVsbG9"));   // non-zero leftover bits
  EXPECT_FALSE(jwt::base64url_decode("aGV sbG8"));  // space
}

TEST(JwtJwks, ImportsEveryKeyTypeAndSkipsOthers) {
  Json doc = keys().jwks();
  doc["keys"].push_back({{"kty", "RSA"}, {"use", "enc"}, {"n", "AQAB"}, {"e", "AQAB"}});
  doc["keys"].push_back({{"kty", "EC"}, {"crv", "secp256k1"}, {"x", "AA"}, {"y", "AA"}});
  const auto r = jwt::parse_jwks(doc.dump());
  EXPECT_TRUE(r.fatal.empty());
  EXPECT_TRUE(r.errors.empty()) << r.errors.front();
  ASSERT_EQ(r.set.keys.size(), 6u);
  EXPECT_EQ(r.notes.size(), 2u);
  EXPECT_EQ(r.set.keys[0].algs & jwt::alg_bit(Alg::HS256), 0);  // RSA never verifies HS*
  EXPECT_NE(r.set.keys[0].algs & jwt::alg_bit(Alg::PS512), 0);
  EXPECT_EQ(r.set.keys[5].algs,
            jwt::alg_bit(Alg::HS256) | jwt::alg_bit(Alg::HS384) | jwt::alg_bit(Alg::HS512));
}

TEST(JwtJwks, AcceptsCoordinatesWithoutTheirLeadingZeroBytes) {
  // Some issuers (PyJWT before 2.8) drop leading zero bytes of "x"/"y", in about one key of
  // 128; the number is the same, so it is accepted. A coordinate too long is not.
  for (int i = 0; i < 20'000; ++i) {
    const PkeyPtr k(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    Json j = jwk_of(k.p, "short");
    const std::string x = *jwt::base64url_decode(j["x"].get<std::string>());
    if (x[0] != '\0') continue;
    j["x"] = b64url(x.substr(1));
    auto r = jwt::parse_jwks(Json{{"keys", {j}}}.dump());
    ASSERT_TRUE(r.errors.empty()) << r.errors.front();
    ASSERT_EQ(r.set.keys.size(), 1u);
    j["x"] = b64url(std::string(1, '\0') + x);
    r = jwt::parse_jwks(Json{{"keys", {j}}}.dump());
    ASSERT_EQ(r.errors.size(), 1u);
    EXPECT_NE(r.errors[0].find("have the wrong length for P-256"), std::string::npos);
    return;
  }
  FAIL() << "no key with a leading zero byte in x in 20000 tries";
}

TEST(JwtJwks, ReportsMalformedKeysWithoutKeyMaterial) {
  Json p256 = jwk_of(keys().p256.p, "bad-point");
  std::string y = *jwt::base64url_decode(p256["y"].get<std::string>());
  y[5] = static_cast<char>(y[5] ^ 1);  // no longer on the curve
  p256["y"] = b64url(y);
  const Json doc{
      {"keys",
       {p256,
        {{"kty", "RSA"}, {"kid", "short"}, {"n", b64url(std::string(128, '\xc1'))}, {"e", "AQAB"}},
        {{"kty", "oct"}, {"kid", "tiny"}, {"k", b64url("0123456789")}},
        {{"kty", "RSA"}, {"kid", "alg"}, {"alg", "HS256"}, {"n", "x"}, {"e", "AQAB"}},
        {{"kty", "OKP"}, {"crv", "Ed25519"}, {"x", "!!"}}}}};
  const auto r = jwt::parse_jwks(doc.dump());
  ASSERT_EQ(r.errors.size(), 5u);
  EXPECT_NE(r.errors[0].find("keys[0] (kid 'bad-point'): not a valid P-256 public key"),
            std::string::npos)
      << r.errors[0];
  EXPECT_NE(r.errors[1].find("shorter than 2048 bits"), std::string::npos) << r.errors[1];
  EXPECT_NE(r.errors[2].find("HMAC key shorter than 32 bytes"), std::string::npos);
  EXPECT_NE(r.errors[4].find("\"x\" is not base64url"), std::string::npos) << r.errors[4];
  EXPECT_EQ(jwt::parse_jwks("[1]").fatal, "not a JSON object (a JWKS is {\"keys\": [...]})");
  EXPECT_EQ(jwt::parse_jwks("{").fatal, "not valid JSON");
  EXPECT_EQ(jwt::parse_jwks("{\"keys\": 1}").fatal, "\"keys\" is not an array");
}

Outcome verify(const std::string& token, const jwt::KeySet& set,
               jwt::AlgMask allowed = jwt::kAllAlgs) {
  jwt::ParsedToken t;
  const Outcome o = jwt::parse_token(token, allowed, t);
  if (o != Outcome::Ok) return o;
  const jwt::KeySet* sets[] = {&set};
  return jwt::verify_signature(t, sets, 1);
}

TEST(JwtVerify, EveryAlgorithmVerifiesAndTamperingFails) {
  const auto set = jwt::parse_jwks(keys().jwks().dump()).set;
  for (int i = 0; i < jwt::kAlgCount; ++i) {
    const Alg alg = static_cast<Alg>(i);
    SCOPED_TRACE(std::string(jwt::alg_name(alg)));
    const std::string token =
        mint(alg, keys().for_alg(alg), keys().secret, good_claims(), keys().kid_for(alg));
    EXPECT_EQ(verify(token, set), Outcome::Ok);
    // Without a kid, every key of the family is tried.
    EXPECT_EQ(verify(mint(alg, keys().for_alg(alg), keys().secret, good_claims()), set),
              Outcome::Ok);
    // A changed payload, a changed signature.
    Json other = good_claims();
    other["sub"] = "mallory";
    const auto dot = token.rfind('.');
    const std::string payload_swapped =
        token.substr(0, token.find('.')) + "." + b64url(other.dump()) + token.substr(dot);
    EXPECT_EQ(verify(payload_swapped, set), Outcome::BadSignature);
    std::string sig = *jwt::base64url_decode(token.substr(dot + 1));
    sig[sig.size() / 2] = static_cast<char>(sig[sig.size() / 2] ^ 0x10);
    EXPECT_EQ(verify(token.substr(0, dot + 1) + b64url(sig), set), Outcome::BadSignature);
    // Only the allowed algorithms.
    EXPECT_EQ(verify(token, set, jwt::kAllAlgs & ~jwt::alg_bit(alg)), Outcome::UnsupportedAlg);
  }
}

TEST(JwtVerify, KeySelectionAndConfusion) {
  const auto set = jwt::parse_jwks(keys().jwks().dump()).set;
  const auto rsa_only = jwt::parse_jwks(Json{{"keys", {jwk_of(keys().rsa.p, "rsa")}}}.dump()).set;
  // HS256 with the RSA key's modulus as secret: no oct key, so no HMAC at all.
  const std::string modulus =
      *jwt::base64url_decode(jwk_of(keys().rsa.p, "rsa")["n"].get<std::string>());
  EXPECT_EQ(verify(mint(Alg::HS256, nullptr, modulus, good_claims(), "rsa"), rsa_only),
            Outcome::UnsupportedAlg);
  EXPECT_EQ(verify(mint(Alg::HS256, nullptr, modulus, good_claims()), rsa_only),
            Outcome::UnsupportedAlg);
  EXPECT_EQ(verify(mint(Alg::RS256, keys().rsa.p, "", good_claims(), "nope"), rsa_only),
            Outcome::UnknownKid);
  // A kid naming a key of another family.
  EXPECT_EQ(verify(mint(Alg::ES256, keys().p256.p, "", good_claims(), "rsa"), set),
            Outcome::UnsupportedAlg);
  // ES256 signature of the wrong length (DER instead of r||s).
  jwt::ParsedToken t;
  const std::string es = mint(Alg::ES256, keys().p256.p, "", good_claims(), "p256");
  ASSERT_EQ(jwt::parse_token(es, jwt::kAllAlgs, t), Outcome::Ok);
  t.signature += '\0';
  const jwt::KeySet* sets[] = {&set};
  EXPECT_EQ(jwt::verify_signature(t, sets, 1), Outcome::BadSignature);
  // A 32-byte secret verifies HS256 only.
  jwt::KeySet short_secret;
  short_secret.keys.push_back(jwt::hmac_key(std::string(32, 's')));
  EXPECT_EQ(verify(mint(Alg::HS256, nullptr, std::string(32, 's'), good_claims()), short_secret),
            Outcome::Ok);
  EXPECT_EQ(verify(mint(Alg::HS512, nullptr, std::string(32, 's'), good_claims()), short_secret),
            Outcome::UnsupportedAlg);
}

TEST(JwtVerify, MalformedAndUnsupported) {
  const auto set = jwt::parse_jwks(keys().jwks().dump()).set;
  const std::string body = b64url(good_claims().dump());
  auto with_header = [&](const Json& h) { return b64url(h.dump()) + "." + body + ".c2ln"; };
  EXPECT_EQ(verify(with_header({{"alg", "none"}}), set), Outcome::UnsupportedAlg);
  EXPECT_EQ(verify(b64url(Json{{"alg", "none"}}.dump()) + "." + body + ".", set),
            Outcome::UnsupportedAlg);
  EXPECT_EQ(verify(with_header({{"alg", "RS1"}}), set), Outcome::UnsupportedAlg);
  EXPECT_EQ(verify(with_header({{"alg", 5}}), set), Outcome::Malformed);
  EXPECT_EQ(verify(with_header({{"typ", "JWT"}}), set), Outcome::Malformed);
  EXPECT_EQ(verify(with_header({{"alg", "RS256"}, {"crit", {"exp"}}}), set), Outcome::Malformed);
  EXPECT_EQ(verify(with_header({{"alg", "RS256"}, {"kid", 1}}), set), Outcome::Malformed);
  EXPECT_EQ(verify("a.b", set), Outcome::Malformed);
  EXPECT_EQ(verify("a.b.c.d.e", set), Outcome::Malformed);
  EXPECT_EQ(verify("..", set), Outcome::Malformed);
  EXPECT_EQ(verify(b64url("not json") + "." + body + ".c2ln", set), Outcome::Malformed);
  EXPECT_EQ(verify(with_header({{"alg", "RS256"}}).replace(0, 1, "+"), set), Outcome::Malformed);
}

TEST(JwtClaims, ChecksAndReadsOut) {
  jwt::ClaimRules rules;
  rules.issuers = {"https://other", "https://idp"};
  rules.audiences = {"api"};
  rules.groups_claim = "realm_access.roles";
  rules.forward_claims = {{"sub", "x-user"},
                          {"groups", "x-groups"},
                          {"n", "x-n"},
                          {"realm_access", "x-realm"},
                          {"missing", "x-missing"}};
  const std::int64_t now = now_s();
  auto check = [&](const Json& c, jwt::Identity* out = nullptr) {
    jwt::ParsedToken t;
    const std::string payload = b64url(c.dump());
    t.payload_b64 = payload;
    jwt::Identity id;
    const Outcome o = jwt::check_claims(t, rules, now, id);
    if (out != nullptr) *out = id;
    return o;
  };
  jwt::Identity id;
  ASSERT_EQ(check(good_claims(), &id), Outcome::Ok);
  EXPECT_EQ(id.consumer, "alice");
  EXPECT_EQ(id.scopes, (std::vector<std::string>{"read", "write"}));
  EXPECT_EQ(id.groups, std::vector<std::string>{"admin"});
  EXPECT_EQ(id.exp, good_claims()["exp"].get<std::int64_t>());
  const std::vector<std::pair<std::string, std::string>> fwd = {
      {"x-user", "alice"},
      {"x-groups", "staff,ops"},
      {"x-n", "7"},
      {"x-realm", R"({"roles":["admin"]})"}};
  EXPECT_EQ(id.forwarded, fwd);
  bool saw_groups = false;
  for (const auto& [k, v] : id.claims)
    if (k == "groups") saw_groups = v == R"(["staff","ops"])";
  EXPECT_TRUE(saw_groups);

  auto with = [&](const char* k, const Json& v) {
    Json c = good_claims();
    if (v.is_null())
      c.erase(k);
    else
      c[k] = v;
    return c;
  };
  EXPECT_EQ(check(with("exp", now - 61)), Outcome::Expired);
  EXPECT_EQ(check(with("exp", now - 59)), Outcome::Ok);  // 60s skew
  EXPECT_EQ(check(with("exp", static_cast<double>(now) + 10.5)), Outcome::Ok);
  EXPECT_EQ(check(with("exp", "tomorrow")), Outcome::Malformed);
  EXPECT_EQ(check(with("exp", nullptr)), Outcome::Ok);  // no exp: not required
  EXPECT_EQ(check(with("nbf", now + 120)), Outcome::NotYetValid);
  EXPECT_EQ(check(with("nbf", now + 30)), Outcome::Ok);
  EXPECT_EQ(check(with("iss", "https://evil")), Outcome::WrongIssuer);
  EXPECT_EQ(check(with("iss", nullptr)), Outcome::WrongIssuer);
  EXPECT_EQ(check(with("aud", Json::array({"x", "api"}))), Outcome::Ok);
  EXPECT_EQ(check(with("aud", "apix")), Outcome::WrongAudience);
  EXPECT_EQ(check(with("aud", nullptr)), Outcome::WrongAudience);
  Json scp = with("scope", nullptr);
  scp["scp"] = {"a", "b"};
  ASSERT_EQ(check(scp, &id), Outcome::Ok);
  EXPECT_EQ(id.scopes, (std::vector<std::string>{"a", "b"}));
  // A forwarded value that would split a header is dropped.
  ASSERT_EQ(check(with("sub", "a\r\nx-admin: 1"), &id), Outcome::Ok);
  EXPECT_EQ(id.forwarded.front().first, "x-groups");
}

TEST(JwtTokenCache, BoundedLruWithExpiryAndKeyVersion) {
  jwt::TokenCache c(3, 1 << 20);
  jwt::Identity id;
  id.consumer = "a";
  c.insert("t1", id, 100, 1);
  c.insert("t2", id, 100, 1);
  c.insert("t3", id, 100, 1);
  EXPECT_NE(c.find("t1", 50, 1), nullptr);  // t1 is now the most recent
  c.insert("t4", id, 100, 1);               // evicts t2
  EXPECT_EQ(c.find("t2", 50, 1), nullptr);
  EXPECT_NE(c.find("t1", 50, 1), nullptr);
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(c.find("t3", 100, 1), nullptr);  // expired
  EXPECT_EQ(c.find("t4", 50, 2), nullptr);   // the key set changed
  EXPECT_EQ(c.size(), 1u);
  // A byte bound as well.
  jwt::TokenCache small(1000, 4096);
  for (int i = 0; i < 100; ++i)
    small.insert(std::string(500, 'a') + std::to_string(i), id, 100, 1);
  EXPECT_LE(small.size(), 6u);
  EXPECT_GE(small.size(), 1u);
}

// ---- the filter -----------------------------------------------------------------------------

class FakeUpstreams final : public Upstreams {
 public:
  void fetch(std::string_view cluster, std::string path, std::string, std::chrono::milliseconds,
             std::size_t, std::function<void(FetchResult)> done) override {
    ++fetches;
    last_cluster = std::string(cluster);
    last_path = path;
    if (inline_answer) {
      done(answer);
    } else {
      pending.push_back(std::move(done));
    }
  }
  void complete_all() {
    auto p = std::move(pending);
    pending.clear();
    for (auto& d : p)
      d(answer);
  }
  int fetches = 0;
  bool inline_answer = true;
  FetchResult answer;
  std::string last_cluster, last_path;
  std::vector<std::function<void(FetchResult)>> pending;
};

using TestCallbacks = test_support::RecordingCallbacks;

class JwtFilterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { register_builtin_filter_types(); }

  void SetUp() override {
    char tmpl[] = "/tmp/tp-jwt-unit-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    write("jwks.json", keys().jwks().dump());
    write("hmac.key", keys().secret);
  }
  void TearDown() override {
    for (const auto& f : files_)
      std::remove(f.c_str());
    std::remove(dir_.c_str());
  }
  void write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    files_.push_back(path);
  }

  std::shared_ptr<const FilterConfig> load(const std::string& filter_yaml) {
    const std::string yaml = R"(listeners:
  - name: l
    listen: 127.0.0.1:8080
clusters:
  - name: up
    endpoints: ["127.0.0.1:9001"]
  - name: idp
    endpoints: ["127.0.0.1:9002"]
filters:
  f: )" + filter_yaml + "\n";
    auto r = config::load_string(yaml, dir_ + "/t.yaml");
    for (const auto& e : r.errors)
      ADD_FAILURE() << e.to_string();
    if (!r.config) return nullptr;
    config_ = std::make_unique<config::Config>(std::move(*r.config));
    return build_filter(*config_, *config_->find_filter("f"));
  }

  struct Run {
    Status status;
    std::unique_ptr<Filter> filter;
  };
  Run run(const FilterConfig& cfg, http::RequestHead& req, TestCallbacks& cb) {
    auto f = cfg.create();
    const Status st = f->on_request_headers(req, cb);
    return {st, std::move(f)};
  }
  static http::RequestHead request(const std::string& token) {
    http::RequestHead req;
    req.method = "GET";
    req.target = req.path = "/x";
    if (!token.empty()) req.headers.add("Authorization", "Bearer " + token);
    return req;
  }

  boost::asio::io_context io_;
  FakeUpstreams up_;
  std::string dir_;
  std::vector<std::string> files_;
  std::unique_ptr<config::Config> config_;
};

TEST_F(JwtFilterTest, SetsContextForwardsClaimsAndCaches) {
  auto cfg = load(
      "{type: jwt, jwks: {file: jwks.json}, issuer: https://idp, audiences: [api], "
      "groups_claim: groups, forward_claims: {sub: x-user}, forward_token: false}");
  ASSERT_TRUE(cfg);
  const std::string token = mint(Alg::ES256, keys().p256.p, "", good_claims(), "p256");
  for (int i = 0; i < 2; ++i) {
    auto req = request(token);
    req.headers.add("X-User", "spoofed");
    TestCallbacks cb(io_, up_);
    auto r = run(*cfg, req, cb);
    EXPECT_EQ(r.status, Status::Continue);
    EXPECT_FALSE(cb.replied) << cb.reply.error;
    EXPECT_EQ(cb.ctx.consumer, "alice");
    EXPECT_EQ(cb.ctx.groups, (std::vector<std::string>{"staff", "ops"}));
    EXPECT_EQ(cb.ctx.scopes, (std::vector<std::string>{"read", "write"}));
    ASSERT_NE(cb.ctx.claim("n"), nullptr);
    EXPECT_EQ(*cb.ctx.claim("n"), "7");
    EXPECT_EQ(req.headers.count("x-user"), 1u);
    EXPECT_EQ(*req.headers.get("x-user"), "alice");
    EXPECT_FALSE(req.headers.has("authorization"));
  }
}

TEST_F(JwtFilterTest, RepliesWithChallenges) {
  auto cfg = load("{type: jwt, secret_file: hmac.key, issuer: https://idp, realm: shop}");
  ASSERT_TRUE(cfg);
  {
    auto req = request("");
    TestCallbacks cb(io_, up_);
    auto r1 = run(*cfg, req, cb);
    EXPECT_EQ(r1.status, Status::Stop);
    EXPECT_EQ(cb.reply.status, 401);
    EXPECT_EQ(cb.reply.error, "missing token");
    ASSERT_EQ(cb.reply.headers.size(), 1u);
    EXPECT_EQ(cb.reply.headers[0].second, "Bearer realm=\"shop\"");
  }
  {
    Json c = good_claims();
    c["exp"] = now_s() - 3600;
    auto req = request(mint(Alg::HS384, nullptr, keys().secret, c));
    TestCallbacks cb(io_, up_);
    auto r2 = run(*cfg, req, cb);
    EXPECT_EQ(r2.status, Status::Stop);
    EXPECT_EQ(cb.reply.status, 401);
    EXPECT_EQ(cb.reply.error, "token expired");
    EXPECT_EQ(cb.reply.headers[0].second,
              "Bearer error=\"invalid_token\", error_description=\"token expired\"");
  }
  {
    auto req = request(std::string(20000, 'a'));
    TestCallbacks cb(io_, up_);
    auto r3 = run(*cfg, req, cb);
    EXPECT_EQ(r3.status, Status::Stop);
    EXPECT_EQ(cb.reply.error, "malformed token");
  }
}

TEST_F(JwtFilterTest, RemoteJwksFetchRotationAndRateLimit) {
  auto cfg = load(
      "{type: jwt, issuer: https://idp, jwks: {cluster: idp, path: /jwks, timeout: 1s, "
      "min_refresh_interval: 1h, refresh_interval: 2h}}");
  ASSERT_TRUE(cfg);
  up_.answer.status = 200;
  up_.answer.body = Json{{"keys", {jwk_of(keys().p256.p, "p256")}}}.dump();
  up_.inline_answer = false;
  const std::string t1 = mint(Alg::ES256, keys().p256.p, "", good_claims(), "p256");

  // Two requests (two workers) arrive before the first fetch ends: one fetch, both park.
  auto req1 = request(t1);
  auto req2 = request(t1);
  TestCallbacks cb1(io_, up_), cb2(io_, up_);
  cb2.worker = 1;
  auto r1 = run(*cfg, req1, cb1);
  auto r2 = run(*cfg, req2, cb2);
  EXPECT_EQ(r1.status, Status::Stop);
  EXPECT_EQ(r2.status, Status::Stop);
  EXPECT_FALSE(cb1.replied);
  EXPECT_EQ(up_.fetches, 1);
  EXPECT_EQ(up_.last_cluster, "idp");
  EXPECT_EQ(up_.last_path, "/jwks");
  up_.complete_all();
  EXPECT_EQ(cb1.resumed, 0);  // never inline
  io_.poll();
  EXPECT_EQ(cb1.resumed, 1);
  EXPECT_EQ(cb2.resumed, 1);
  EXPECT_EQ(cb1.ctx.consumer, "alice");
  EXPECT_EQ(cb2.ctx.consumer, "alice");

  // Known keys: synchronous.
  {
    auto req = request(t1);
    TestCallbacks cb(io_, up_);
    auto r4 = run(*cfg, req, cb);
    EXPECT_EQ(r4.status, Status::Continue);
  }
  // An unknown kid within min_refresh_interval of the last fetch: no fetch, 401 at once.
  const std::string t2 = mint(Alg::EdDSA, keys().ed.p, "", good_claims(), "ed");
  {
    auto req = request(t2);
    TestCallbacks cb(io_, up_);
    auto r5 = run(*cfg, req, cb);
    EXPECT_EQ(r5.status, Status::Stop);
    EXPECT_TRUE(cb.replied);
    EXPECT_EQ(cb.reply.error, "unknown key id");
    EXPECT_EQ(up_.fetches, 1);
  }
}

TEST_F(JwtFilterTest, RemoteJwksUnknownKidRefetchesAndFailureKeepsKeys) {
  auto cfg = load(
      "{type: jwt, issuer: https://idp, jwks: {cluster: idp, timeout: 1s, "
      "min_refresh_interval: 1s, refresh_interval: 1h}}");
  ASSERT_TRUE(cfg);
  up_.answer.status = 200;
  up_.answer.body = Json{{"keys", {jwk_of(keys().p256.p, "p256")}}}.dump();
  const std::string t1 = mint(Alg::ES256, keys().p256.p, "", good_claims(), "p256");
  {
    auto req = request(t1);
    TestCallbacks cb(io_, up_);
    auto r = run(*cfg, req, cb);  // the fetch answers inline; the wake-up is still posted
    EXPECT_EQ(r.status, Status::Stop);
    io_.poll();
    io_.restart();
    EXPECT_EQ(cb.resumed, 1);
    EXPECT_EQ(up_.last_path, "/.well-known/jwks.json");
  }
  // Rotation: the IdP adds "ed"; after min_refresh_interval a token with that kid refetches.
  up_.answer.body =
      Json{{"keys", {jwk_of(keys().p256.p, "p256"), jwk_of(keys().ed.p, "ed")}}}.dump();
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  const std::string t2 = mint(Alg::EdDSA, keys().ed.p, "", good_claims(), "ed");
  {
    auto req = request(t2);
    TestCallbacks cb(io_, up_);
    auto r6 = run(*cfg, req, cb);
    EXPECT_EQ(r6.status, Status::Stop);
    io_.poll();
    io_.restart();
    EXPECT_EQ(cb.resumed, 1);
    EXPECT_FALSE(cb.replied) << cb.reply.error;
    EXPECT_EQ(up_.fetches, 2);
  }
  // The IdP fails: a forged kid's refetch fails, the keys stay.
  up_.answer = {0, "upstream timed out", {}, {}};
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  {
    auto req = request(mint(Alg::EdDSA, keys().ed.p, "", good_claims(), "forged"));
    TestCallbacks cb(io_, up_);
    auto r7 = run(*cfg, req, cb);
    EXPECT_EQ(r7.status, Status::Stop);
    io_.poll();
    io_.restart();
    EXPECT_EQ(cb.reply.error, "unknown key id");
    EXPECT_EQ(up_.fetches, 3);
  }
  for (const auto* t : {&t1, &t2}) {
    auto req = request(*t);
    TestCallbacks cb(io_, up_);
    auto r8 = run(*cfg, req, cb);
    EXPECT_EQ(r8.status, Status::Continue);
  }
}

TEST_F(JwtFilterTest, CacheControlMaxAgeSetsTheNextRefresh) {
  auto cfg = load(
      "{type: jwt, issuer: https://idp, jwks: {cluster: idp, path: /max-age, "
      "min_refresh_interval: 1s, refresh_interval: 1h}}");
  ASSERT_TRUE(cfg);
  up_.answer.status = 200;
  up_.answer.body = Json{{"keys", {jwk_of(keys().p256.p, "p256")}}}.dump();
  up_.answer.headers = {{"cache-control", "public, max-age=1"}};
  const std::string t1 = mint(Alg::ES256, keys().p256.p, "", good_claims(), "p256");
  auto once = [&] {
    auto req = request(t1);
    TestCallbacks cb(io_, up_);
    auto r = run(*cfg, req, cb);
    io_.poll();
    io_.restart();
    EXPECT_FALSE(cb.replied) << cb.reply.error;
  };
  once();
  EXPECT_EQ(up_.fetches, 1);
  once();  // answered from the token cache; no refresh due yet
  EXPECT_EQ(up_.fetches, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  once();  // due after max-age (not the 1h refresh_interval): a background refresh
  EXPECT_EQ(up_.fetches, 2);
}

TEST_F(JwtFilterTest, DestroyedWhileWaitingIsNeverCalledBack) {
  auto cfg = load("{type: jwt, issuer: https://idp, jwks: {cluster: idp, timeout: 50ms}}");
  ASSERT_TRUE(cfg);
  up_.inline_answer = false;
  up_.answer.status = 200;
  up_.answer.body = Json{{"keys", {jwk_of(keys().p256.p, "p256")}}}.dump();
  auto req = request(mint(Alg::ES256, keys().p256.p, "", good_claims(), "p256"));
  auto cb = std::make_unique<TestCallbacks>(io_, up_);
  auto r = run(*cfg, req, *cb);
  EXPECT_EQ(r.status, Status::Stop);
  r.filter->on_destroy();
  r.filter.reset();
  cb.reset();  // touching it now would be a use after free (ASan)
  up_.complete_all();
  io_.run_for(std::chrono::milliseconds(200));
}

TEST_F(JwtFilterTest, NoKeysAnswers503AfterTheTimeout) {
  auto cfg = load("{type: jwt, issuer: https://idp, jwks: {cluster: idp, timeout: 50ms}}");
  ASSERT_TRUE(cfg);
  up_.inline_answer = false;  // never answers
  auto req = request(mint(Alg::ES256, keys().p256.p, "", good_claims(), "p256"));
  TestCallbacks cb(io_, up_);
  auto r9 = run(*cfg, req, cb);
  EXPECT_EQ(r9.status, Status::Stop);
  io_.run_for(std::chrono::milliseconds(1000));
  EXPECT_TRUE(cb.replied);
  EXPECT_EQ(cb.reply.status, 503);
  EXPECT_EQ(cb.reply.error, "jwks unavailable");
}

TEST_F(JwtFilterTest, ConfigErrors) {
  auto r = config::load_string(R"(listeners:
  - name: l
    listen: 127.0.0.1:8080
filters:
  a: {type: jwt, secret_file: /nonexistent/secret, algorithms: [RS999]}
  b: {type: jwt, jwks: {cluster: nope, min_refresh_interval: 1h, refresh_interval: 1m}}
)",
                               dir_ + "/t.yaml");
  std::string all;
  for (const auto& e : r.errors)
    all += e.to_string() + "\n";
  EXPECT_NE(all.find("cannot read '/nonexistent/secret'"), std::string::npos) << all;
  EXPECT_NE(all.find("unknown algorithm 'RS999'"), std::string::npos) << all;
  EXPECT_NE(all.find("min_refresh_interval is longer than refresh_interval"), std::string::npos)
      << all;
  EXPECT_NE(all.find("unknown cluster 'nope'"), std::string::npos) << all;
}

}  // namespace
}  // namespace turnpike::filters
