// Each class of config error, with the exact line the user sees: file:line:column, key path
// (0-based list indexes), message.
#include <gtest/gtest.h>

#include "turnpike/config/config.h"
#include "unit/config/load_helpers.h"

namespace turnpike::config {
namespace {

using testing::error_lines;
using testing::expect_errors;
using testing::kPreamble;

std::string with_routes(const std::string& routes) {
  return std::string(kPreamble) + "routes:\n" + routes;  // routes' first item is on line 10
}

TEST(ConfigErrorFormat, ErrorAndWarning) {
  ConfigError e{"turnpike.yaml",       14,   7, "routes[2].match.path_prefix",
                "must start with '/'", false};
  EXPECT_EQ(e.to_string(), "turnpike.yaml:14:7: routes[2].match.path_prefix: must start with '/'");
  e.warning = true;
  EXPECT_EQ(e.to_string(),
            "turnpike.yaml:14:7: warning: routes[2].match.path_prefix: must start with '/'");
  const ConfigError no_loc{"x.yaml", 0, 0, "", "cannot read config file", false};
  EXPECT_EQ(no_loc.to_string(), "x.yaml: cannot read config file");
}

TEST(Errors, PathPrefixMustStartWithSlash) {
  // The issue's example: the value node of routes[2].match.path_prefix.
  const auto r = load_string(with_routes(R"(  - backend: users
  - backend: orders
    match: {path: /o}
  - match:
      path_prefix: users
    backend: users
)"),
                             "turnpike.yaml");
  EXPECT_EQ(error_lines(r),
            (std::vector<std::string>{
                "turnpike.yaml:14:20: routes[2].match.path_prefix: must start with '/'"}));
  EXPECT_FALSE(r.config.has_value());
}

TEST(Errors, UnknownKeyWithDidYouMean) {
  expect_errors(
      with_routes(R"(  - match:
      path_prefx: /users
    backend: users
)"),
      {"t.yaml:11:7: routes[0].match: unknown key 'path_prefx' (did you mean 'path_prefix'?)"});
  expect_errors(std::string(kPreamble) + "listener:\n  - listen: 127.0.0.1:1\n",
                {"t.yaml:9:1: unknown key 'listener' (did you mean 'listeners'?)"});
  // Nothing close: no suggestion.
  expect_errors(std::string(kPreamble) + "frobnicate: 1\n",
                {"t.yaml:9:1: unknown key 'frobnicate'"});
  expect_errors(R"(listeners:
  - listen: 127.0.0.1:1
    limits: {max_header_byte: 1KiB, header_timeot: 1s}
)",
                {"t.yaml:3:14: listeners[0].limits: unknown key 'max_header_byte' (did you mean "
                 "'max_header_bytes'?)",
                 "t.yaml:3:37: listeners[0].limits: unknown key 'header_timeot' (did you mean "
                 "'header_timeout'?)"});
}

TEST(Errors, DuplicateKey) {
  expect_errors(std::string(kPreamble) + "workers: 2\nworkers: 3\n",
                {"t.yaml:10:1: workers: duplicate key 'workers'"});
}

TEST(Errors, UnknownCluster) {
  expect_errors(with_routes(R"(  - match: {path: /a}
    backend: users
  - backend: userz
  - backends: [{cluster: users, weight: 1}, {cluster: order, weight: 2}]
)"),
                {"t.yaml:12:14: routes[1].backend: unknown cluster 'userz' (did you mean 'users'?)",
                 "t.yaml:13:55: routes[2].backends[1].cluster: unknown cluster 'order' (did you "
                 "mean 'orders'?)"});
}

TEST(Errors, YamlSyntaxErrorPosition) {
  expect_errors("listeners:\n  - listen: [127.0.0.1:1\nworkers: 2\n",
                {"t.yaml:3:8: invalid YAML: end of sequence flow not found"});
  expect_errors("listeners:\n\t- listen: 127.0.0.1:1\n",
                {"t.yaml:2:2: invalid YAML: illegal block entry"});
  expect_errors("workers: a: b\n", {"t.yaml:1:11: invalid YAML: illegal map value"});
}

TEST(Errors, CollectsEveryError) {
  const auto r = load_string(R"(workers: many
admin: {listen: "localhost:9901"}
listeners:
  - name: public
    listen: 0.0.0.0:70000
    limits: {header_timeout: 10, max_header_bytes: 2MiB}
clusters:
  - name: users
    endpoints: []
    lb_policy: round_robbin
routes:
  - match: {path_prefix: api, path_regex: "(", methods: ["GE T"]}
    respond: {status: 600}
    redirect: {status: 200, location: ""}
  - backend: users
    timeout: 0
drain_timeout: 1d
)",
                             "t.yaml");
  EXPECT_EQ(
      error_lines(r),
      (std::vector<std::string>{
          "t.yaml:1:10: workers: expected 'auto' or an integer between 1 and 1024, got 'many'",
          "t.yaml:2:17: admin.listen: 'localhost:9901' is not an IP address and port (e.g. "
          "'0.0.0.0:8080' or '[::]:8080'; host names are not accepted here)",
          "t.yaml:5:13: listeners[0].listen: '0.0.0.0:70000' has a port out of range (1-65535)",
          "t.yaml:6:30: listeners[0].limits.header_timeout: duration '10' needs a unit: ms, "
          "s, m or h (e.g. '10s')",
          "t.yaml:6:52: listeners[0].limits.max_header_bytes: must be between 1KiB and 1MiB, "
          "got '2MiB'",
          "t.yaml:9:16: clusters[0].endpoints: a cluster needs at least one endpoint",
          "t.yaml:10:16: clusters[0].lb_policy: unsupported lb_policy 'round_robbin' "
          "(supported: round_robin, least_request, random, ring_hash, maglev) (did you mean "
          "'round_robin'?)",
          "t.yaml:12:26: routes[0].match.path_prefix: must start with '/'",
          "t.yaml:12:43: routes[0].match.path_regex: conflicts with 'path_prefix': set only "
          "one of path, path_prefix, path_regex",
          "t.yaml:12:58: routes[0].match.methods[0]: 'GE T' is not a valid HTTP method",
          "t.yaml:13:23: routes[0].respond.status: must be between 100 and 599, got 600",
          "t.yaml:14:15: routes[0].redirect: conflicts with 'respond': a route has exactly "
          "one action (backend, backends, respond or redirect)",
          "t.yaml:14:24: routes[0].redirect.status: must be one of 301, 302, 303, 307, 308, "
          "got 200",
          "t.yaml:14:39: routes[0].redirect.location: must not be empty",
          "t.yaml:16:14: routes[1].timeout: must be greater than 0 and at most 24h, got '0'",
          "t.yaml:17:16: drain_timeout: invalid duration '1d' (expected e.g. '250ms', "
          "'1.5s', '1m', '2h')",
      }));
  EXPECT_FALSE(r.config.has_value());
}

TEST(Errors, RouteActions) {
  expect_errors(with_routes(R"(  - match: {path: /a}
  - match: {path: /b}
    backend: users
    backends: [{cluster: users}]
  - match: {path: /c}
    backends: []
  - match: {path: /d}
    respond: {body: x}
    rewrite: {host: example.com}
  - match: {path_regex: "/e.*"}
    backend: users
    rewrite: {path_prefix: /x}
)"),
                {
                    "t.yaml:10:5: routes[0]: no action: set one of backend, backends, respond or "
                    "redirect",
                    "t.yaml:13:15: routes[1].backends: conflicts with 'backend': a route has "
                    "exactly one action (backend, backends, respond or redirect)",
                    "t.yaml:15:15: routes[2].backends: must list at least one backend",
                    "t.yaml:18:14: routes[3].rewrite: rewrite applies only to routes that proxy "
                    "(backend or backends)",
                    "t.yaml:21:28: routes[4].rewrite.path_prefix: needs match.path_prefix or "
                    "match.path (it replaces the matched prefix)",
                });
}

TEST(Errors, Weights) {
  expect_errors(
      with_routes(R"(  - backends: [{cluster: users, weight: 0}, {cluster: orders, weight: 10001}]
)") + "  - respond: {}\n",
      {"t.yaml:10:41: routes[0].backends[0].weight: must be between 1 and 10000, got 0",
       "t.yaml:10:71: routes[0].backends[1].weight: must be between 1 and 10000, got "
       "10001"});
  expect_errors(
      R"(listeners: [{listen: "127.0.0.1:1"}]
clusters:
  - name: c
    endpoints: [{address: "127.0.0.1:1", weight: 1001}, {weight: 2}, 5]
)",
      {"t.yaml:4:50: clusters[0].endpoints[0].weight: must be between 1 and 1000, got 1001",
       "t.yaml:4:57: clusters[0].endpoints[1]: missing required key 'address'",
       "t.yaml:4:70: clusters[0].endpoints[2]: '5' needs a port: 'HOST:PORT'"});
}

TEST(Errors, MatchValues) {
  expect_errors(with_routes(R"(  - match:
      host: "api.*.com"
      path_regex: "a(b"
      headers: {"bad header": x, x-ok: {regex: "[z"}, x-p: {present: false}, x-n: ~}
      query: {q: {regex: a, present: true}, r: {regx: a}, s: {}}
    backend: users
  - match: {host: "api.example.com:8080", path: "/a/../b"}
    backend: users
)"),
                {
                    "t.yaml:11:13: routes[0].match.host: 'api.*.com': '*' is allowed only as the "
                    "whole first label ('*.example.com')",
                    "t.yaml:12:19: routes[0].match.path_regex: invalid regex 'a(b': missing ): a(b",
                    "t.yaml:13:17: routes[0].match.headers: invalid header name 'bad header'",
                    "t.yaml:13:48: routes[0].match.headers.x-ok.regex: invalid regex '[z': missing "
                    "]: [z",
                    "t.yaml:13:70: routes[0].match.headers.x-p.present: only 'present: true' is "
                    "supported (remove the entry to not match on it)",
                    "t.yaml:13:78: routes[0].match.headers.x-n: expected a string, {regex: "
                    "\"...\"} or {present: true}, got nothing",
                    "t.yaml:14:18: routes[0].match.query.q: set exactly one of 'regex' or "
                    "'present'",
                    "t.yaml:14:49: routes[0].match.query.r: unknown key 'regx' (did you mean "
                    "'regex'?)",
                    "t.yaml:14:62: routes[0].match.query.s: set exactly one of 'regex' or "
                    "'present'",
                    "t.yaml:16:19: routes[1].match.host: 'api.example.com:8080' must not include a "
                    "port (the Host port is ignored for matching)",
                    "t.yaml:16:49: routes[1].match.path: '/a/../b' can never match: request paths "
                    "are normalized (repeated '/' merged, '.' and '..' segments removed) before "
                    "matching",
                });
}

TEST(Errors, ListenAddresses) {
  expect_errors(R"(admin: {listen: "127.0.0.1:8080"}
listeners:
  - {name: a, listen: "127.0.0.1:8080"}
  - {name: a, listen: "127.0.0.1:8081"}
  - {name: c, listen: "127.0.0.1:8081"}
  - {name: d, listen: "::1:80"}
  - {name: e, listen: "[::1]"}
  - {name: f, listen: "8080"}
  - {name: g, listen: "[::1]:0"}
  - {name: h, listen: "[::1]:0"}
  - {name: i, listen: "300.1.1.1:1"}
  - {name: j}
)",
                {
                    "t.yaml:3:23: listeners[0].listen: '127.0.0.1:8080' is also the admin listen "
                    "address (admin.listen)",
                    "t.yaml:4:12: listeners[1].name: duplicate listener name 'a' (also "
                    "listeners[0])",
                    "t.yaml:5:23: listeners[2].listen: duplicate listen address '127.0.0.1:8081' "
                    "(also listeners[1])",
                    "t.yaml:6:23: listeners[3].listen: '::1:80' is an IPv6 address without "
                    "brackets: write '[ADDRESS]:PORT'",
                    "t.yaml:7:23: listeners[4].listen: '[::1]' needs a port: '[::1]:PORT'",
                    "t.yaml:8:23: listeners[5].listen: '8080' needs a port: 'HOST:PORT'",
                    "t.yaml:11:23: listeners[8].listen: '300.1.1.1:1' is not an IP address and "
                    "port (e.g. '0.0.0.0:8080' or '[::]:8080'; host names are not accepted here)",
                    "t.yaml:12:5: listeners[9]: missing required key 'listen'",
                });
  expect_errors("admin: {listen: \"127.0.0.1:0\"}\nlisteners: []\n",
                {"t.yaml:1:17: admin.listen: '127.0.0.1:0' has a port out of range (1-65535)",
                 "t.yaml:2:12: listeners: at least one listener is required"});
}

TEST(Errors, AtLeastOneListener) {
  expect_errors("workers: 2\n", {"t.yaml:1:1: listeners: at least one listener is required"});
  expect_errors("",
                {"t.yaml:1:1: listeners: at least one listener is required (the file is empty)"});
  expect_errors("- a\n", {"t.yaml:1:1: expected a map at the top level, got a list"});
}

TEST(Errors, DuplicateNames) {
  expect_errors(R"(listeners: [{listen: "127.0.0.1:1"}]
clusters:
  - name: users
    endpoints: ["127.0.0.1:1"]
  - name: users
    endpoints: ["127.0.0.1:2"]
routes:
  - name: a
    match: {path: /a}
    backend: users
  - name: route-2
    match: {path: /b}
    backend: users
  - match: {path: /c}
    backend: users
  - name: a
    match: {path: /d}
    backend: users
)",
                {"t.yaml:5:11: clusters[1].name: duplicate cluster name 'users' (also clusters[0])",
                 "t.yaml:14:5: routes[2]: duplicate route name 'route-2' (also routes[1])",
                 "t.yaml:16:11: routes[3].name: duplicate route name 'a' (also routes[0])"});
}

TEST(Errors, ClusterShape) {
  expect_errors(
      R"(listeners: [{listen: "127.0.0.1:1"}]
clusters:
  - endpoints: ["127.0.0.1:0", "[::1:2", "bad_host!:1", "[nothost]:1"]
    connect_timeout: 25h
    max_idle_per_endpoint: -1
  - name: x
)",
      {"t.yaml:3:5: clusters[0]: missing required key 'name'",
       "t.yaml:3:17: clusters[0].endpoints[0]: '127.0.0.1:0' has a port out of range "
       "(1-65535)",
       "t.yaml:3:32: clusters[0].endpoints[1]: '[::1:2' has no closing ']'",
       "t.yaml:3:42: clusters[0].endpoints[2]: 'bad_host!:1' is not a valid host name or "
       "IP address",
       "t.yaml:3:57: clusters[0].endpoints[3]: '[nothost]:1' is not a valid IPv6 address",
       "t.yaml:4:22: clusters[0].connect_timeout: must be greater than 0 and at most 24h, "
       "got '25h'",
       "t.yaml:5:28: clusters[0].max_idle_per_endpoint: must be between 0 and 10000, got "
       "-1",
       "t.yaml:6:5: clusters[1]: missing required key 'endpoints' (a cluster needs at "
       "least one endpoint)"});
}

TEST(Errors, HashOn) {
  expect_errors(
      R"(listeners: [{listen: "127.0.0.1:1"}]
clusters:
  - {name: a, endpoints: ["127.0.0.1:9"], lb_policy: maglev, hash_on: clientip}  
  - {name: b, endpoints: ["127.0.0.1:9"], lb_policy: maglev, hash_on: {header: a, cookie: b}}
  - {name: c, endpoints: ["127.0.0.1:9"], lb_policy: maglev, hash_on: {header: ""}}
  - {name: d, endpoints: ["127.0.0.1:9"], lb_policy: maglev, hash_on: {header: "x y"}}
  - {name: e, endpoints: ["127.0.0.1:9"], lb_policy: random, hash_on: client_ip}
)",
      {"t.yaml:3:71: clusters[0].hash_on: unknown hash_on 'clientip' (expected client_ip, "
       "consumer, {header: NAME}, {cookie: NAME} or {query: NAME}) (did you mean 'client_ip'?)",
       "t.yaml:4:71: clusters[1].hash_on: set exactly one of header, cookie, query",
       "t.yaml:5:80: clusters[2].hash_on.header: must not be empty",
       "t.yaml:6:80: clusters[3].hash_on.header: 'x y' is not a valid header name",
       "t.yaml:7:71: clusters[4].hash_on: hash_on needs lb_policy ring_hash or maglev "
       "(lb_policy is 'random')"});
}

TEST(Errors, OutlierDetection) {
  expect_errors(
      R"(listeners: [{listen: "127.0.0.1:1"}]
clusters:
  - name: a
    endpoints: ["127.0.0.1:9"]
    outlier_detection: {base_ejection_time: 1m, max_ejection_time: 30s, max_ejection_percnt: 5}
    panic_threshold: 101
)",
      {"t.yaml:5:68: clusters[0].outlier_detection.max_ejection_time: must be at least "
       "base_ejection_time",
       "t.yaml:5:73: clusters[0].outlier_detection: unknown key 'max_ejection_percnt' (did you "
       "mean 'max_ejection_percent'?)",
       "t.yaml:6:22: clusters[0].panic_threshold: must be between 0 and 100, got 101"});
}

TEST(Errors, HealthCheck) {
  expect_errors(
      R"(listeners: [{listen: "127.0.0.1:1"}]
clusters:
  - {name: a, endpoints: ["127.0.0.1:9"], health_check: {interval: 1s}}
  - {name: b, endpoints: ["127.0.0.1:9"], health_check: {http: {}, tcp: {}}}
  - {name: c, endpoints: ["127.0.0.1:9"], health_check: {grpc: {}}}
  - {name: d, endpoints: ["127.0.0.1:9"], health_check: {http: {path: healthz}}}
  - {name: e, endpoints: ["127.0.0.1:9"], health_check: {http: {expected_statuses: [2xx, "400-300"]}}}
  - {name: f, endpoints: ["127.0.0.1:9"], health_check: {tcp: {}, interval: 10ms, healthy_threshold: 0}}
  - {name: g, endpoints: ["127.0.0.1:9"], health_check: {htpp: {}}}
)",
      {"t.yaml:3:57: clusters[0].health_check: needs one of http, tcp, grpc",
       "t.yaml:4:57: clusters[1].health_check: set exactly one of http, tcp, grpc",
       "t.yaml:5:64: clusters[2].health_check.grpc: a grpc health check needs the cluster's "
       "protocol to be h2c or h2 (it is http1)",
       "t.yaml:6:71: clusters[3].health_check.http.path: must start with '/' and hold no spaces "
       "or control characters",
       "t.yaml:7:85: clusters[4].health_check.http.expected_statuses[0]: expected a status (200) "
       "or a range (\"200-399\") within 100-599",
       "t.yaml:7:90: clusters[4].health_check.http.expected_statuses[1]: expected a status (200) "
       "or a range (\"200-399\") within 100-599",
       "t.yaml:8:77: clusters[5].health_check.interval: must be at least 100ms",
       "t.yaml:8:102: clusters[5].health_check.healthy_threshold: must be between 1 and 1000, got "
       "0",
       "t.yaml:9:57: clusters[6].health_check: needs one of http, tcp, grpc",
       "t.yaml:9:58: clusters[6].health_check: unknown key 'htpp' (did you mean 'http'?)"});
}

TEST(Errors, DnsDiscovery) {
  expect_errors(
      R"(listeners: [{listen: "127.0.0.1:1"}]
clusters:
  - {name: a, discovery: dsn, endpoints: ["127.0.0.1:9"]}
  - {name: b, endpoints: ["127.0.0.1:9"], dns: {refresh: 1s}}
  - {name: c, discovery: dns, endpoints: ["x.test:9"], dns: {refresh: 10ms, family: ipv4}}
  - {name: d, discovery: dns, endpoints: ["x.test:9"], dns: {resolvers: [dns.test, "1.2.3.4:0"]}}
  - {name: e, discovery: dns, endpoints: ["x.test"], dns: {resolvers: [], ttl: 1}}
)",
      {"t.yaml:3:26: clusters[0].discovery: unknown discovery 'dsn' (supported: static, dns)",
       "t.yaml:4:48: clusters[1].dns: dns settings need discovery: dns",
       "t.yaml:5:71: clusters[2].dns.refresh: must be at least 100ms and at most 24h, got '10ms'",
       "t.yaml:5:85: clusters[2].dns.family: unknown family 'ipv4' (supported: auto, v4, v6) "
       "(did you mean 'v4'?)",
       "t.yaml:6:74: clusters[3].dns.resolvers[0]: 'dns.test' is not a resolver address (an IP "
       "address, with an optional port: \"10.0.0.2\", \"127.0.0.1:5353\", \"[::1]:53\")",
       "t.yaml:6:84: clusters[3].dns.resolvers[1]: '1.2.3.4:0' is not a resolver address (an IP "
       "address, with an optional port: \"10.0.0.2\", \"127.0.0.1:5353\", \"[::1]:53\")",
       "t.yaml:7:43: clusters[4].endpoints[0]: 'x.test' needs a port: 'HOST:PORT'",
       "t.yaml:7:71: clusters[4].dns.resolvers: list at least one resolver, or leave resolvers "
       "out",
       "t.yaml:7:75: clusters[4].dns: unknown key 'ttl'"});
}

TEST(Errors, ClusterLimits) {
  expect_errors(
      R"(listeners: [{listen: "127.0.0.1:1"}]
clusters:
  - {name: a, endpoints: ["127.0.0.1:9"], limits: {max_requests: 0, max_conections: 5}}
)",
      {"t.yaml:3:66: clusters[0].limits.max_requests: must be between 1 and 1000000, got 0",
       "t.yaml:3:69: clusters[0].limits: unknown key 'max_conections' (did you mean "
       "'max_connections'?)"});
}

TEST(Errors, RouteRetry) {
  expect_errors(with_routes(R"(  - backend: users
    retry: {attempts: 0, on: [5xx, gatway-error], statuses: [503]}
  - backend: users
    retry: {on: [retriable-status], backoff: {base: 1s, max: 10ms}, methods: [get]}
)"),
                {"t.yaml:11:23: routes[0].retry.attempts: must be between 1 and 10, got 0",
                 "t.yaml:11:36: routes[0].retry.on[1]: unknown retry condition 'gatway-error' "
                 "(known: connect-failure, refused-stream, reset, gateway-error, 5xx, "
                 "retriable-status) (did you mean 'gateway-error'?)",
                 "t.yaml:11:61: routes[0].retry.statuses: statuses apply only with "
                 "'retriable-status' in 'on'",
                 "t.yaml:13:17: routes[1].retry.on: retriable-status needs a 'statuses' list",
                 "t.yaml:13:62: routes[1].retry.backoff.max: must be at least base",
                 "t.yaml:13:79: routes[1].retry.methods[0]: 'get' is not an upper-case method "
                 "name"});
}

TEST(Errors, RouteMirror) {
  expect_errors(with_routes(R"(  - backend: users
    mirror: {cluster: user, percent: 101}
  - backend: users
    mirror: {percent: 5}
)"),
                {"t.yaml:11:23: routes[0].mirror.cluster: unknown cluster 'user' (did you mean "
                 "'users'?)",
                 "t.yaml:11:38: routes[0].mirror.percent: must be between 0 and 100, got 101",
                 "t.yaml:13:13: routes[1].mirror: missing required key 'cluster'"});
}

TEST(Errors, RouteRequestBuffering) {
  expect_errors(with_routes(R"(  - backend: users
    request_buffering: {max_bytes: 1MB2}
  - backend: users
    request_buffering: {max_bytes: 65MiB, max_byte: 1KiB}
  - backend: users
    request_buffering: {max_bytes: 0}
  - backend: users
    request_buffering: sometimes
  - backend: users
    request_buffering: [max_bytes]
  - respond: {status: 200}
    request_buffering: {}
)"),
                {"t.yaml:11:36: routes[0].request_buffering.max_bytes: invalid size '1MB2' "
                 "(expected bytes, or e.g. '64KiB', '10MiB', '1GiB', '10MB')",
                 "t.yaml:13:36: routes[1].request_buffering.max_bytes: must be between 1 and "
                 "64MiB, got '65MiB'",
                 "t.yaml:13:43: routes[1].request_buffering: unknown key 'max_byte' (did you "
                 "mean 'max_bytes'?)",
                 "t.yaml:15:36: routes[2].request_buffering.max_bytes: must be between 1 and "
                 "64MiB, got '0'",
                 "t.yaml:17:24: routes[3].request_buffering: expected a map such as {max_bytes: "
                 "1MiB}, or on/off, got 'sometimes'",
                 "t.yaml:19:24: routes[4].request_buffering: expected a map, got a list",
                 "t.yaml:21:24: routes[5].request_buffering: request_buffering applies only to "
                 "routes that proxy (backend or backends)"});
}

TEST(Errors, RespondHeaders) {
  expect_errors(with_routes(R"(  - respond:
      headers: {Content-Length: "5", content-type: x, X-A: "a
        b", x-b: "ok", X-B: "dup"}
)"),
                {"t.yaml:11:17: routes[0].respond.headers: 'Content-Length' is set by Turnpike and "
                 "cannot be configured",
                 "t.yaml:11:38: routes[0].respond.headers: set the content type with "
                 "'content_type'",
                 "t.yaml:12:24: routes[0].respond.headers.X-B: duplicate key 'X-B'"});
}

TEST(Errors, TypeMismatches) {
  expect_errors(R"(listeners: {listen: "127.0.0.1:1"}
clusters:
  - name: [x]
    endpoints: "127.0.0.1:1"
routes:
  - match: [path]
    respond: {status: ok}
)",
                {"t.yaml:1:12: listeners: expected a list, got a map",
                 "t.yaml:3:11: clusters[0].name: expected a string, got a list",
                 "t.yaml:4:16: clusters[0].endpoints: expected a list, got '127.0.0.1:1'",
                 "t.yaml:6:12: routes[0].match: expected a map, got a list",
                 "t.yaml:7:23: routes[0].respond.status: expected an integer between 100 and 599, "
                 "got 'ok'"});
}

}  // namespace
}  // namespace turnpike::config
