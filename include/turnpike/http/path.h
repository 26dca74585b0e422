// Request-target parsing and path normalization, done once per request before routing.
#pragma once

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
/// Returns nullopt for an invalid target (not starting with '/', bad percent-encoding,
/// an encoded NUL, control characters) which the codec answers with 400.
std::optional<SplitTarget> normalize_target(std::string_view target);

/// Looks up a query parameter by name (first occurrence, value percent-decoded).
std::optional<std::string> query_param(std::string_view query, std::string_view name);

/// Lower-cases the host and strips a port ("API.Example.com:8080" -> "api.example.com",
/// "[::1]:80" -> "[::1]").
std::string normalize_host(std::string_view authority);

}  // namespace turnpike::http
