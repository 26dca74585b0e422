// Request-target parsing and path normalization, done once per request before routing.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace turnpike::http {

struct SplitTarget {
  std::string path;   // normalized
  std::string query;  // raw, without '?'
};

/// Parses an origin-form request-target ("/a/b?x=1"); the absolute form ("http://h/a") is
/// accepted too and reduced to its path and query. Normalizes the path:
///  - percent-encoded unreserved characters (ALPHA DIGIT - . _ ~) are decoded, other
///    percent-encodings keep their octet with upper-case hex digits;
///  - repeated slashes are merged;
///  - dot-segments are removed (RFC 3986 5.2.4), never climbing above the root.
///  - raw bytes >= 0x80 (lax clients' UTF-8) are percent-encoded, so both spellings match
///    alike; %2F stays encoded, so it never splits a segment.
/// Returns nullopt for an invalid target (not starting with '/', the asterisk form "*", bad
/// percent-encoding, an encoded NUL, raw control characters or space, '#') which the codec
/// answers with 400. The query is kept raw; only raw controls, space and '#' are checked.
std::optional<SplitTarget> normalize_target(std::string_view target);

/// Looks up a query parameter by name (first occurrence, value percent-decoded).
/// Names and values are decoded as application/x-www-form-urlencoded: %XX escapes (an
/// invalid escape is kept literally) and '+' as a space. A parameter without '=' has an
/// empty value.
std::optional<std::string> query_param(std::string_view query, std::string_view name);

/// Like query_param() but returns the raw, still-encoded value. Never allocates.
std::optional<std::string_view> find_query_param(std::string_view query,
                                                 std::string_view name) noexcept;

/// Decodes one query component (see query_param) into `out`, which must hold at least
/// raw.size() bytes; returns the decoded length. Never allocates.
std::size_t decode_query_component(std::string_view raw, char* out) noexcept;

/// True when the decoded form of `raw` equals `plain`. Never allocates.
bool query_component_equals(std::string_view raw, std::string_view plain) noexcept;

/// Lower-cases the host and strips a port ("API.Example.com:8080" -> "api.example.com",
/// "[::1]:80" -> "[::1]") and one trailing dot ("example.com." names the same host as
/// "example.com", so it must route the same).
std::string normalize_host(std::string_view authority);

}  // namespace turnpike::http
