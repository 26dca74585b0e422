// Typed, validated configuration: what config/ produces from YAML and everything above reads.
// Plain immutable values; no Asio, no YAML types. Built on the control thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace turnpike::config {

using Duration = std::chrono::milliseconds;

/// Where a value came from in the YAML source (1-based line and column).
struct SourceLoc {
  int line = 0;
  int column = 0;
};

/// One problem found while loading a config. `path` is the key path, e.g. "routes[2].match.path".
struct ConfigError {
  std::string file;
  int line = 0;
  int column = 0;
  std::string path;
  std::string message;
  bool warning = false;
  /// "file:line:column: path: message" (prefixed "warning: " after the location for warnings).
  std::string to_string() const;
};

struct Limits {
  std::uint64_t max_header_bytes = 64 * 1024;
  std::uint32_t max_headers = 100;
  std::uint64_t max_uri_bytes = 8 * 1024;
  std::optional<std::uint64_t> max_body_bytes;  // unlimited when unset
  Duration header_timeout{10'000};
  Duration idle_timeout{60'000};
  Duration body_timeout{60'000};  // max time without progress while reading a request body
  std::uint32_t max_connections = 50'000;
};

struct Listener {
  std::string name;
  std::string listen;   // as written, "0.0.0.0:8080" or "[::1]:8080"
  std::string address;  // IP literal
  std::uint16_t port = 0;
  Limits limits;
  SourceLoc loc;
};

struct Endpoint {
  std::string written;  // as in the YAML ("users.internal:9001")
  std::string address;  // resolved IP literal
  std::uint16_t port = 0;
  std::uint32_t weight = 1;
};

struct Cluster {
  std::string name;
  std::vector<Endpoint> endpoints;
  Duration connect_timeout{1'000};
  std::uint32_t max_idle_per_endpoint = 64;  // pooled keep-alive connections per endpoint per worker
  Duration idle_timeout{60'000};             // pooled connection closed after this long unused
  std::string lb_policy = "round_robin";
  SourceLoc loc;
};

/// A value matcher for headers and query parameters.
struct ValueMatch {
  enum class Kind { Exact, Regex, Present };
  Kind kind = Kind::Exact;
  std::string value;  // exact value or RE2 pattern (full match)
};

struct RouteMatch {
  std::optional<std::string> host;  // "api.example.com" or "*.example.com"; lower-cased
  std::optional<std::string> path;
  std::optional<std::string> path_prefix;
  std::optional<std::string> path_regex;
  std::vector<std::string> methods;                             // upper-case; empty = any
  std::vector<std::pair<std::string, ValueMatch>> headers;  // names lower-cased
  std::vector<std::pair<std::string, ValueMatch>> query;
};

struct WeightedBackend {
  std::string cluster;
  std::uint32_t weight = 1;
};

struct Rewrite {
  std::optional<std::string> path_prefix;  // replaces the matched path_prefix (or path)
  std::optional<std::string> host;         // Host header sent upstream
};

struct DirectResponse {
  int status = 200;
  std::string body;
  std::string content_type = "text/plain";
  std::vector<std::pair<std::string, std::string>> headers;
};

struct Redirect {
  int status = 302;
  std::string location;
};

struct Route {
  std::string name;
  RouteMatch match;
  std::vector<WeightedBackend> backends;  // `backend: x` becomes one entry with weight 1
  Rewrite rewrite;
  Duration timeout{15'000};  // upstream response-header deadline and body inactivity bound
  std::optional<DirectResponse> respond;
  std::optional<Redirect> redirect;
  SourceLoc loc;
};

struct AccessLog {
  std::string path = "stdout";  // stdout | stderr | off | FILE
};

struct Admin {
  std::string listen = "127.0.0.1:9901";
  std::string address = "127.0.0.1";
  std::uint16_t port = 9901;
};

struct Config {
  unsigned workers = 0;  // 0 = auto (one per core)
  Admin admin;
  std::vector<Listener> listeners;
  std::vector<Cluster> clusters;
  std::vector<Route> routes;
  AccessLog access_log;
  Duration drain_timeout{15'000};
  std::string source_file;  // path the config was loaded from
  std::string digest;       // hex SHA-256 of the source text

  const Cluster* find_cluster(std::string_view name) const;
};

struct LoadResult {
  std::optional<Config> config;  // set only when there are no errors
  std::vector<ConfigError> errors;
  std::vector<ConfigError> warnings;
};

/// Loads and validates a config file. Control thread only (may resolve host names, blocking).
LoadResult load_file(const std::string& path);
/// Same, from text; `file_name` is used in messages.
LoadResult load_string(const std::string& yaml, const std::string& file_name);

/// Parses "250ms", "5s", "1m", "2h" (and "0"). Returns nullopt when malformed.
std::optional<Duration> parse_duration(std::string_view text);
/// Parses "512", "64KiB", "10MiB", "1GiB" (also KB/MB/GB as powers of 1000). nullopt when malformed.
std::optional<std::uint64_t> parse_size(std::string_view text);

}  // namespace turnpike::config
