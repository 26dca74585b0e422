// Typed, validated configuration: what config/ produces from YAML and everything above reads.
// Plain immutable values; no Asio, no YAML types. Built on the control thread.
//
// The comments give each key's default and accepted range; docs/configuration.md is the user
// guide. Durations are written "250ms", "1.5s", "1m", "2h" (or "0"); sizes "512", "64KiB",
// "10MiB", "1GiB" (powers of 1024) or "10KB", "10MB", "1GB" (powers of 1000).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
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
  /// Without a position (line 0, e.g. an unreadable file): "file: message"; without a path:
  /// "file:line:column: message" (YAML syntax errors).
  std::string to_string() const;
};

/// A rate or a quota: `count` per `period`, written "100/s", "1000/min", "5/hour", "10/day",
/// "1000000/month" (a month is a calendar month, UTC, where it is a window).
struct Rate {
  enum class Period : std::uint8_t { Second, Minute, Hour, Day, Month };
  std::uint64_t count = 0;
  Period period = Period::Second;
  /// The period's length (a month counts as 30 days where a length is needed).
  Duration length() const noexcept;
  std::string to_string() const;
};

struct Config;

/// A filter type's parsed settings (src/filters/<type>/ defines the concrete type and its
/// parser; config/ only carries them). Immutable once parsed.
struct FilterSettings {
  virtual ~FilterSettings() = default;
  /// Files the settings name (a JWKS file, a secret), which the parser has read and checked
  /// (reporting problems at its own keys): watched and digested like certificates.
  virtual std::vector<std::string> files() const { return {}; }
  /// Checks against the rest of the config once it is loaded (a cluster or consumer the filter
  /// names exists, `redis:` is there when the filter needs it). Report each problem with
  /// `error(key, message)`: `key` is the filter's own key the problem is about ("store",
  /// "jwks.cluster"), or "" for the filter itself.
  virtual void validate(
      const Config& config,
      const std::function<void(std::string_view key, std::string message)>& error) const {
    (void)config;
    (void)error;
  }
};

/// `filters:` a map of instance name -> {type: T, ...the type's keys}.
struct FilterInstance {
  std::string name;
  std::string type;
  std::shared_ptr<const FilterSettings> settings;
  std::string written;  // the block as written, as JSON text (for the effective-config dump)
  SourceLoc loc;
};

/// `consumers[]`: who calls the API, for authentication filters, authz, limits and usage.
struct Consumer {
  std::string name;  // required, unique; also the basic-auth user name
  std::vector<std::string> groups;
  /// `api_keys`: plain keys or "sha256:<64 hex digits>"; kept here as lower-case hex SHA-256
  /// digests only, so a key written in plain text is hashed at load.
  std::vector<std::string> api_key_sha256;
  /// `basic_auth.password_hash`: crypt(3) hash, bcrypt ($2y$, $2b$, $2a$) or SHA-512-crypt ($6$).
  std::string password_hash;
  SourceLoc loc;
};

/// `redis`: the Redis server shared limits and quotas use.
struct Redis {
  std::string address;  // "host:port" as written (host: an IP literal or a name resolved at load)
  std::string host;     // resolved IP literal
  std::uint16_t port = 6379;
  Duration connect_timeout{1'000};  // 1ms..1m
  Duration timeout{250};            // per command, 1ms..1m
  std::string password;             // AUTH, when set
  std::uint32_t database = 0;       // SELECT, 0..15
  SourceLoc loc;
};

/// `listeners[].limits`. Every timeout: > 0 and at most 24h.
struct Limits {
  std::uint64_t max_header_bytes = 64 * 1024;   // 1KiB..1MiB; request line + headers (431)
  std::uint32_t max_headers = 100;              // 1..10000 (431)
  std::uint64_t max_uri_bytes = 8 * 1024;       // 256..1MiB (414)
  std::optional<std::uint64_t> max_body_bytes;  // unlimited when unset (or "unlimited"); 0.. (413)
  Duration header_timeout{10'000};              // whole request head must arrive within (408)
  Duration idle_timeout{60'000};                // keep-alive connection idle between requests
  Duration body_timeout{60'000};                // no progress reading a request body this long
  std::uint32_t max_connections = 50'000;       // 1..1000000, per listener across all workers
};

/// `listeners[]`: at least one. `listen` is an IP literal and port; port 0 = any free port.
/// `listeners[].tls.certificates[]`: a PEM certificate (chain) and its private key. Relative
/// paths are resolved against the config file's directory.
struct TlsCertificate {
  std::string cert;
  std::string key;
};

/// `listeners[].tls`: TLS termination. The files are read and checked when the config loads.
struct ListenerTls {
  std::vector<TlsCertificate> certificates;  // the first is the default (no SNI or no match)
  std::string min_version = "1.2";           // "1.2" | "1.3"
  std::string ciphers;                       // TLS 1.2 cipher list; empty: the safe default
  std::string client_ca;                     // verify client certificates against this CA
  bool require_client_cert = false;          // with client_ca: refuse clients without one
  bool forward_client_cert = false;          // send X-Forwarded-Client-Cert upstream
  bool session_tickets = true;               // resumption with tickets (rotating keys)
};

/// `listeners[].http2`: HTTP/2 settings and abuse limits (h2 over TLS, h2c in cleartext).
struct Http2Settings {
  std::uint32_t max_concurrent_streams = 100;      // 1..10000; also bounds requests in flight
  std::uint32_t initial_window_size = 65'535;      // 1KiB..16MiB; request body buffered per stream
  std::uint32_t connection_window_size = 1 << 20;  // 64KiB..1GiB; all streams' request bodies
  std::uint32_t max_frame_size = 16'384;           // 16KiB..16MiB-1
  std::uint32_t header_table_size = 4'096;         // 0..64KiB; HPACK decoder table
  // Rapid reset (CVE-2023-44487): RST_STREAMs from the client, token bucket; over it: GOAWAY.
  std::uint32_t max_resets_burst = 1'000;  // 1..1000000
  std::uint32_t max_resets_per_second = 33;
  std::uint32_t max_continuations = 8;  // CONTINUATION frames per header block (CVE-2024-27316)
  // SETTINGS, PING and PRIORITY frames from the client, token bucket; over it: ENHANCE_YOUR_CALM.
  std::uint32_t max_control_frames_burst = 1'000;
  std::uint32_t max_control_frames_per_second = 100;
  // Consecutive frames with an empty payload (DATA without END_STREAM, say) before GOAWAY.
  std::uint32_t max_empty_frames = 8;
};

struct Listener {
  std::string name;     // default "listener-N" (N = index); unique
  std::string listen;   // as written, "0.0.0.0:8080" or "[::1]:8080"
  std::string address;  // IP literal
  std::uint16_t port = 0;
  Limits limits;
  std::optional<ListenerTls> tls;
  /// `protocols`: which codecs the listener speaks. Default: [http1, h2] with TLS (ALPN),
  /// [http1] without. `h2c` (cleartext HTTP/2 with prior knowledge) shares the port with http1
  /// by the connection preface; `h2` needs `tls`.
  bool http1 = true;
  bool h2 = false;
  bool h2c = false;
  Http2Settings http2;
  /// `filters`: filter instances run for every request on this listener, before routing.
  std::vector<std::string> filters;
  /// `defer_accept`: TCP_DEFER_ACCEPT: the kernel hands a connection over once its first bytes
  /// arrive (HTTP and TLS clients speak first), so accepting it never costs a read that finds
  /// nothing and a wake-up for the bytes; a silent connection is accepted about a second late.
  bool defer_accept = true;
  SourceLoc loc;
};

/// `clusters[].endpoints[]`: "ip:port", "[v6]:port", "host:port" or {address, weight}.
/// Host names are resolved once at load (getaddrinfo; the first IPv4 address, else IPv6).
struct Endpoint {
  std::string written;       // as in the YAML ("users.internal:9001")
  std::string address;       // resolved IP literal (no brackets)
  std::uint16_t port = 0;    // 1..65535
  std::uint32_t weight = 1;  // 1..1000
};

/// `clusters[].tls`: TLS to the backends. Relative paths: against the config file's directory.
struct ClusterTls {
  std::string ca;           // verify the backend against this CA bundle; empty: the system store
  std::string server_name;  // SNI and the name verified; empty: each endpoint's host as written
  std::string cert;         // client certificate (mTLS to the backend), with `key`
  std::string key;
  bool verify = true;  // false: no verification at all (testing only; logged as a warning)
};

/// `clusters[].http2`: HTTP/2 to the backends (protocol h2 or h2c).
struct ClusterHttp2 {
  std::uint32_t max_concurrent_streams = 100;      // 1..10000 per connection (and the peer's cap)
  std::uint32_t initial_window_size = 256 * 1024;  // 64KiB..16MiB; response buffered per stream
  std::uint32_t connection_window_size = 16 * 1024 * 1024;  // 64KiB..1GiB
};

/// `clusters[].hash_on`: what a consistent-hash policy (ring_hash, maglev) hashes. A request
/// without the key (no such header, cookie or parameter; no consumer) is balanced at random.
struct HashOn {
  enum class Kind { None, Header, Cookie, Query, ClientIp, Consumer };
  Kind kind = Kind::None;
  std::string name;  // the header (lower-cased), cookie or query parameter name
};

/// `clusters[].outlier_detection`: passive health from the answers real requests get. An
/// endpoint that fails this many times in a row (a counter of 0: that trigger is off) is taken
/// out of balancing for base_ejection_time times the number of times it was ejected (at most
/// max_ejection_time), for every worker; at most max_ejection_percent of a cluster's endpoints
/// are out at once. `outlier_detection: off` turns it off.
struct OutlierDetection {
  bool enabled = true;
  std::uint32_t consecutive_5xx = 5;               // 0..1000: 5xx answers from the backend
  std::uint32_t consecutive_gateway_failures = 3;  // 0..1000: connect failure, reset, timeout
  Duration base_ejection_time{30'000};
  Duration max_ejection_time{300'000};      // >= base_ejection_time
  std::uint32_t max_ejection_percent = 50;  // 0..100
};

/// `clusters[].health_check`: active checks of every endpoint, by one checker per process
/// (not one per worker), off the worker threads. Exactly one of `http`, `tcp`, `grpc`. An
/// endpoint failing unhealthy_threshold checks in a row leaves balancing until it passes
/// healthy_threshold in a row. Endpoints start healthy (no warm-up), and keep their health
/// across a reload that keeps them and their check.
struct HealthCheck {
  enum class Kind { None, Http, Tcp, Grpc };
  Kind kind = Kind::None;
  std::string path = "/";  // http: the request path (GET)
  std::string host;        // http, grpc: Host / :authority; empty: the endpoint's host as written
  /// http: statuses that pass, as inclusive ranges ("200-399", 204).
  std::vector<std::pair<int, int>> expected_statuses{{200, 399}};
  std::string service;       // grpc: grpc.health.v1 service name ("": the server as a whole)
  Duration interval{5'000};  // 100ms..24h, plus up to 10% jitter
  /// Between checks of an endpoint that is unhealthy (Envoy's unhealthy_interval, HAProxy's
  /// downinter): how soon a recovered one is noticed. 100ms..24h; default `interval`.
  std::optional<Duration> unhealthy_interval;
  Duration timeout{1'000};                // one check, connect included; at most interval
  std::uint32_t unhealthy_threshold = 2;  // 1..1000
  std::uint32_t healthy_threshold = 2;    // 1..1000
};

/// `clusters[].limits`: circuit breakers, per process (each worker enforces its equal share,
/// ceil(limit / workers), with no counter shared on the request path). 1..1000000 each.
struct ClusterLimits {
  std::uint32_t max_connections = 1024;       // open connections per endpoint
  std::uint32_t max_pending_requests = 1024;  // waiting for a connection (max_connections)
  std::uint32_t max_requests = 1024;          // in flight to the cluster
  std::uint32_t max_retries = 3;              // retries in flight to the cluster; 0: none
};

/// `clusters[].dns`: with `discovery: dns`, how the endpoints' names are resolved (c-ares, off
/// the worker and control threads; upstream/dns_discovery.h).
struct DnsSettings {
  Duration refresh{5'000};  // 100ms..24h: each name is resolved again this often
  /// true: also no later than the records' TTL (at least 1s, or `refresh` when shorter).
  bool respect_ttl = false;
  enum class Family { Auto, V4, V6 };
  Family family = Family::Auto;  // auto: every A and AAAA record; v4: A only; v6: AAAA only
  /// DNS servers ("127.0.0.1:5353", "10.0.0.2" (port 53), "[::1]:53"), normalized to c-ares'
  /// "ip:port,..." form; empty: those of /etc/resolv.conf.
  std::string resolvers;
};

/// `clusters[]`. Timeouts: > 0 and at most 24h.
struct Cluster {
  std::string name;  // required, unique
  /// The endpoints requests go to. Static clusters (the default): as written, names resolved
  /// once at load. `discovery: dns`: filled from `names` by the resolver when a snapshot is
  /// built (every address a name resolves to is an endpoint), and empty until a name resolves.
  std::vector<Endpoint> endpoints;
  /// `discovery: dns`: the endpoints as written (required, at least one); `address` is set for
  /// IP literals and empty for names, which are resolved at run time, never at load.
  bool dns_discovery = false;
  std::vector<Endpoint> names;
  DnsSettings dns;
  Duration connect_timeout{1'000};
  // 0..10000 pooled keep-alive connections per endpoint per worker; 0 disables pooling.
  std::uint32_t max_idle_per_endpoint = 1024;
  Duration idle_timeout{60'000};  // pooled connection closed after this long unused
  /// `lb_policy`: round_robin (smooth weighted), least_request (power of two choices over
  /// active requests, weighted), random (weighted), ring_hash or maglev (consistent hashing on
  /// `hash_on`).
  std::string lb_policy = "round_robin";
  HashOn hash_on;  // required by ring_hash and maglev, refused by the others
  OutlierDetection outlier_detection;
  HealthCheck health_check;  // kind None: no active checks
  ClusterLimits limits;
  /// `panic_threshold`: 0..100 (percent). When fewer than this share of the endpoints are
  /// usable (the others ejected), balance over all of them rather than overload the few left.
  std::uint32_t panic_threshold = 50;
  std::optional<ClusterTls> tls;
  /// `protocol`: http1 (default), h2 (HTTP/2 over TLS, ALPN h2; needs `tls`) or h2c (cleartext
  /// HTTP/2 with prior knowledge). HTTP/2 connections are multiplexed: a new one is opened when
  /// every open one has http2.max_concurrent_streams streams.
  std::string protocol = "http1";
  ClusterHttp2 http2;
  SourceLoc loc;
};

/// A value matcher for headers and query parameters: "value" (exact), {regex: "..."} (RE2 full
/// match) or {present: true}.
struct ValueMatch {
  enum class Kind { Exact, Regex, Present };
  Kind kind = Kind::Exact;
  std::string value;  // exact value or RE2 pattern (full match)
};

/// `routes[].match`; every key optional, all that are set must match; absent = any request.
/// At most one of path / path_prefix / path_regex.
struct RouteMatch {
  std::optional<std::string> host;         // "api.example.com" or "*.example.com"; lower-cased
  std::optional<std::string> path;         // exact; starts with '/'
  std::optional<std::string> path_prefix;  // segment boundary; starts with '/'
  std::optional<std::string> path_regex;   // RE2 full match on the normalized path
  std::vector<std::string> methods;        // upper-case; empty = any
  std::vector<std::pair<std::string, ValueMatch>> headers;  // names lower-cased
  std::vector<std::pair<std::string, ValueMatch>> query;
};

struct WeightedBackend {
  std::string cluster;       // must name a cluster
  std::uint32_t weight = 1;  // 1..10000
};

/// Only on proxied routes. `path_prefix` needs match.path_prefix or match.path.
struct Rewrite {
  std::optional<std::string> path_prefix;  // replaces the matched path_prefix (or path)
  std::optional<std::string> host;         // Host header sent upstream
};

struct DirectResponse {
  int status = 200;  // 100..599
  std::string body;
  std::string content_type = "text/plain";
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
};

struct Redirect {
  int status = 302;      // 301, 302, 303, 307 or 308
  std::string location;  // required, non-empty
};

/// `routes[]`, tried in order. Exactly one action: backend/backends, respond or redirect.
/// `routes[].retry`: when and how a failed try is sent again (to another endpoint when there
/// is one). Without it, only what cannot have reached the backend is retried, once: a failed
/// connect (in a cluster of two or more), an HTTP/2 stream the backend refused unprocessed, and
/// an idempotent request on a pooled connection the backend had closed.
struct RetryPolicy {
  std::uint32_t attempts = 2;  // tries in all, the first included; 1..10
  // `on`: connect-failure, refused-stream, reset, gateway-error (reset, per-try timeout, 502,
  // 503, 504), 5xx (gateway-error and every 5xx), retriable-status (`statuses`).
  bool on_connect_failure = true;
  bool on_refused_stream = true;
  bool on_reset = true;
  bool on_timeout = true;
  bool on_gateway_error = true;             // 502, 503, 504 responses
  bool on_5xx = false;                      // every 5xx response
  std::vector<int> statuses;                // retriable-status: these responses (100..599)
  std::optional<Duration> per_try_timeout;  // each try's response head; within `timeout`
  Duration backoff_base{25};                // full jitter: random(0, min(max, base * 2^n))
  Duration backoff_max{250};
  std::uint32_t budget_percent = 20;         // retries in flight at most this share of requests...
  std::uint32_t budget_min_concurrency = 3;  // ...or this many, whichever is more
  /// Methods whose requests may be sent again after they may have reached the backend (a
  /// reset, a timeout, a retried status). Connect failures and refused streams are retried
  /// for any method: nothing reached the backend.
  std::vector<std::string> methods{"GET", "HEAD", "OPTIONS", "PUT", "DELETE"};
};

/// `routes[].mirror`: a copy of `percent` of the route's requests goes to `cluster` too, its
/// answer discarded; never delays or fails the real request.
struct Mirror {
  std::string cluster;          // required; a cluster of `clusters`
  std::uint32_t percent = 100;  // 0..100
};

/// `routes[].request_buffering`: the request body is read into memory, up to `max_bytes`,
/// before an endpoint is picked and a connection taken, so a slow upload does not hold a
/// backend connection (nginx's proxy_request_buffering). A body that fits goes up whole (and
/// can be retried like a body-less request); a longer one goes up once `max_bytes` are here,
/// the rest streamed. Off by default: streaming both ways at once is what gRPC and other
/// bidirectional streams need, and buffering adds latency and memory.
struct RequestBuffering {
  std::uint64_t max_bytes = 1024 * 1024;  // 1 byte..64MiB
};

struct Route {
  std::string name;  // default "route-N" (N = index); unique
  RouteMatch match;
  std::vector<WeightedBackend> backends;  // `backend: x` becomes one entry with weight 1
  Rewrite rewrite;
  // How long the response head may take once the request has been sent upstream (504);
  // > 0, at most 24h.
  Duration timeout{15'000};
  // Body inactivity while proxying: no byte moving either way (request or response body) for
  // this long ends the request (504 before the response head, a reset after); a stream is never
  // cut while data flows. > 0, at most 24h.
  Duration idle_timeout{60'000};
  std::optional<RetryPolicy> retry;
  std::optional<Mirror> mirror;
  std::optional<RequestBuffering> request_buffering;  // none: the body streams (the default)
  /// `websocket`: WebSocket upgrades (HTTP/1.1 Upgrade, HTTP/2 extended CONNECT) are tunnelled
  /// to the backend; `websocket: false` refuses them, `{idle_timeout: 5m}` closes a tunnel
  /// with no traffic either way for that long (1s..24h).
  bool websocket = true;
  Duration websocket_idle_timeout{300'000};
  std::optional<DirectResponse> respond;
  std::optional<Redirect> redirect;
  /// `filters`: filter instances this route runs, in order, after the listener's.
  std::vector<std::string> filters;
  SourceLoc loc;
};

/// How the running daemon picks up config changes (read at start).
struct ReloadSettings {
  bool watch = true;       // reload when the file (or a ConfigMap symlink swap) changes
  Duration debounce{100};  // quiet time after the last change before reloading; 1ms..1m
  /// Generations (the current one and older ones still pinned by requests) alive at once;
  /// over the cap, the oldest generations' requests are closed. 2..1024.
  std::uint32_t max_live_generations = 8;
  /// How long a superseded generation's requests may run before they are closed; 1s..24h.
  Duration generation_drain_timeout{600'000};
};

struct AccessLog {
  std::string path = "stdout";  // stdout | stderr | off | FILE
};

/// `admin.listen`: IP literal and port 1..65535.
struct Admin {
  std::string listen = "127.0.0.1:9901";
  std::string address = "127.0.0.1";
  std::uint16_t port = 9901;
};

struct Config {
  unsigned workers = 0;  // `auto` (0 here) = one per core, or 1..1024
  Admin admin;
  std::vector<Listener> listeners;
  std::vector<Cluster> clusters;
  std::vector<Route> routes;
  std::vector<Consumer> consumers;
  std::optional<Redis> redis;
  std::vector<FilterInstance> filters;  // in source order
  AccessLog access_log;
  ReloadSettings reload;
  Duration drain_timeout{15'000};  // 0..24h
  std::string source_file;         // path the config was loaded from
  std::string digest;              // hex SHA-256 of the source text and the files it names
  /// SHA-256 of each file the config names (referenced_files()), by path.
  std::map<std::string, std::string> file_digests;

  const Cluster* find_cluster(std::string_view name) const;
  const FilterInstance* find_filter(std::string_view name) const;
  const Consumer* find_consumer(std::string_view name) const;
  /// The files this config names and reads (certificates, keys, CA bundles; JWKS files with
  /// JWT), which the reload watcher watches along with the config file itself. Their content is
  /// part of `digest`, so a changed certificate is a changed config.
  std::vector<std::string> referenced_files() const;
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

/// Parses "250ms", "5s", "1m", "2h", "1.5s" (and "0"). Returns nullopt when malformed, when a
/// bare number other than "0" has no unit, or when the result is not a whole millisecond.
std::optional<Duration> parse_duration(std::string_view text);
/// The shortest exact spelling: 15000ms -> "15s", 250ms -> "250ms", 0 -> "0s".
std::string format_duration(Duration d);
/// Parses "512", "64KiB", "10MiB", "1GiB" (also KB/MB/GB as powers of 1000). nullopt when
/// malformed.
std::optional<std::uint64_t> parse_size(std::string_view text);

}  // namespace turnpike::config
