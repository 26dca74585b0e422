// JSON Web Keys (RFC 7517/7518/8037) turned once, at config load or after a JWKS fetch, into
// ready-to-verify OpenSSL keys, so a request never parses key material. Immutable once built;
// a KeySet is shared read-only by every worker.
#pragma once

#include <openssl/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace turnpike::filters::jwt {

/// The JWS algorithms the filter verifies ("none" is never one of them).
enum class Alg : std::uint8_t {
  RS256,
  RS384,
  RS512,
  PS256,
  PS384,
  PS512,
  ES256,
  ES384,
  ES512,
  EdDSA,
  HS256,
  HS384,
  HS512,
};
inline constexpr int kAlgCount = 13;

/// A set of algorithms, one bit per Alg.
using AlgMask = std::uint16_t;
inline constexpr AlgMask alg_bit(Alg a) noexcept {
  return static_cast<AlgMask>(1u << static_cast<unsigned>(a));
}
inline constexpr AlgMask kAllAlgs = static_cast<AlgMask>((1u << kAlgCount) - 1);

std::optional<Alg> alg_from_name(std::string_view name) noexcept;
std::string_view alg_name(Alg a) noexcept;
/// "RS256, PS256, ..." for messages.
std::string alg_names(AlgMask m);

/// Base64url without padding (RFC 7515 section 2); trailing '=' padding is tolerated. nullopt on
/// any character outside the alphabet or an impossible length.
std::optional<std::string> base64url_decode(std::string_view in);

struct PkeyFree {
  void operator()(EVP_PKEY* p) const noexcept;
};

/// One verification key: an asymmetric public key or an HMAC secret, and the algorithms it may
/// verify (its kty/crv/size, narrowed by its own `alg`): an RSA key never verifies an HS*
/// token, an `oct` key never an RS* one.
struct Key {
  std::string kid;  // empty: the key matches any kid
  AlgMask algs = 0;
  std::shared_ptr<EVP_PKEY> pkey;  // RSA, EC, OKP
  std::string secret;              // oct / secret_file
};

struct KeySet {
  std::vector<Key> keys;
  AlgMask algs() const noexcept {
    AlgMask m = 0;
    for (const auto& k : keys)
      m |= k.algs;
    return m;
  }
};

/// What reading a JWKS document gave: the usable keys, the problems with keys that were skipped
/// (`errors`: malformed keys; `notes`: keys that are fine but not for signatures).
struct JwksResult {
  KeySet set;
  std::string fatal;  // not JSON, no "keys" array: nothing was read
  std::vector<std::string> errors;
  std::vector<std::string> notes;
};

/// Parses a JWKS document ({"keys": [...]}) or a single JWK object.
JwksResult parse_jwks(std::string_view text);

/// An HMAC key from raw secret bytes: HS256 from 32 bytes, HS384 from 48, HS512 from 64 (RFC
/// 7518 section 3.2: the key is at least as long as the hash).
Key hmac_key(std::string secret, std::string kid = {});

}  // namespace turnpike::filters::jwt
