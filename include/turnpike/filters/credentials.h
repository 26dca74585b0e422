// What the authentication filters (api_key, basic_auth, jwt) share: SHA-256 digests of credentials
// and the `realm:` and `consumers:` settings that restrict a filter to some consumers.
#pragma once

#include <array>
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace turnpike::config {
struct Config;
struct Consumer;
class Reader;
class Node;
}  // namespace turnpike::config

namespace turnpike::filters {

using Sha256 = std::array<unsigned char, 32>;

/// A SHA-256 digest is uniformly distributed: its first bytes are a fine hash.
struct Sha256Hash {
  std::size_t operator()(const Sha256& d) const noexcept;
};

/// SHA-256 of `data`. The algorithm is fetched once and each thread reuses one digest context,
/// so a call costs the hash and nothing else (OpenSSL 3's one-shot SHA256() fetches the
/// algorithm, under a lock, on every call).
Sha256 sha256(std::string_view data);

/// SHA-256 of the parts, each preceded by its length (so that no two lists of parts share an
/// input), without copying them into one buffer.
Sha256 sha256_of_parts(std::initializer_list<std::string_view> parts);

/// 64 hex digits (either case) as a digest; nullopt otherwise.
std::optional<Sha256> sha256_from_hex(std::string_view hex);

/// `realm:`: a string that can go inside a quoted WWW-Authenticate parameter. Sets `out` when
/// valid; reports at the node otherwise.
void read_realm(config::Reader& r, const config::Node& n, std::string& out);

/// `consumers:`: a non-empty list of distinct consumer names.
void read_consumer_names(config::Reader& r, const config::Node& n, std::vector<std::string>& out);

/// Every name in `names` is a consumer that `has` a credential (`what` names it in the error).
void validate_consumer_names(const config::Config& config, const std::vector<std::string>& names,
                             bool (*has)(const config::Consumer&), std::string_view what,
                             const std::function<void(std::string_view, std::string)>& error);

/// Whether the filter serves `consumer`: an empty list serves everyone.
bool serves(const std::vector<std::string>& names, std::string_view consumer) noexcept;

}  // namespace turnpike::filters
