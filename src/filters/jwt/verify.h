// Verifying one compact JWS token (RFC 7515/7519): splitting and decoding it, picking the key
// by kid and algorithm family, checking the signature with OpenSSL EVP, then the registered
// claims, and reading out what later filters and the upstream get (consumer, groups, scopes,
// claims, forwarded headers). Pure functions: any thread, no I/O.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "filters/jwt/jwk.h"

namespace turnpike::filters::jwt {

/// Why a token was refused; also the JSON body's "error" text (see describe()).
enum class Outcome : std::uint8_t {
  Ok,
  Malformed,
  UnsupportedAlg,
  UnknownKid,
  BadSignature,
  Expired,
  NotYetValid,
  WrongIssuer,
  WrongAudience,
};

std::string_view describe(Outcome o) noexcept;

/// A token split and decoded, signature not yet checked. Views point into the token string.
struct ParsedToken {
  std::string_view signing_input;  // "header.payload", what the signature covers
  std::string_view payload_b64;
  std::string signature;
  Alg alg = Alg::RS256;
  std::string kid;
  bool has_kid = false;
};

/// Splits and decodes the header and signature. Malformed (not three base64url parts, header
/// not a JSON object, `crit` present, too long) or UnsupportedAlg (`none`, unknown, or not in
/// `allowed`).
Outcome parse_token(std::string_view token, AlgMask allowed, ParsedToken& out);

/// Checks the signature with the keys of `sets` (null entries skipped): keys whose kid equals
/// the token's (or that have no kid) and whose family fits the token's alg, at most
/// `kMaxTries` of them. UnknownKid: the token names a kid no key has; UnsupportedAlg: no key
/// fits the algorithm (an HS256 token against RSA keys); BadSignature: keys fit, none verified.
inline constexpr int kMaxTries = 8;
Outcome verify_signature(const ParsedToken& t, const KeySet* const* sets, std::size_t n);

/// What the filter checks and reads out of the claims.
struct ClaimRules {
  std::vector<std::string> issuers;    // any of; empty: not checked
  std::vector<std::string> audiences;  // any of; empty: not checked
  std::chrono::seconds clock_skew{60};
  std::string consumer_claim = "sub";
  std::string groups_claim;                                         // empty: none
  std::vector<std::pair<std::string, std::string>> forward_claims;  // claim -> header name
};

/// A verified token's facts, as later filters and the upstream get them.
struct Identity {
  std::string consumer;
  std::vector<std::string> groups;
  std::vector<std::string> scopes;
  std::vector<std::pair<std::string, std::string>> claims;     // top-level, strings as-is
  std::vector<std::pair<std::string, std::string>> forwarded;  // header name -> value
  std::int64_t exp = 0;                                        // unix seconds; 0: none
};

/// Decodes the payload and checks exp/nbf (with the skew), iss and aud at `now` (unix seconds);
/// on Ok fills `out`.
Outcome check_claims(const ParsedToken& t, const ClaimRules& rules, std::int64_t now,
                     Identity& out);

}  // namespace turnpike::filters::jwt
