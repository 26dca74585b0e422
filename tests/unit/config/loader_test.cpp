#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "turnpike/config/config.h"
#include "turnpike/config/to_json.h"
#include "unit/config/load_helpers.h"

namespace turnpike::config {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::error_lines;
using testing::expect_valid;
using testing::joined;

// Every key of the contract, each set to something other than its default.
constexpr const char* kFull = R"(workers: 4
admin:
  listen: 127.0.0.1:9911
listeners:
  - name: public
    listen: 0.0.0.0:8080
    limits:
      max_header_bytes: 32KiB
      max_headers: 50
      max_uri_bytes: 4KiB
      max_body_bytes: 10MiB
      header_timeout: 5s
      idle_timeout: 30s
      body_timeout: 1.5s
      max_connections: 1000
  - name: v6
    listen: "[::1]:0"
clusters:
  - name: users
    endpoints: ["127.0.0.1:9001", {address: "127.0.0.1:9002", weight: 3}]
    connect_timeout: 250ms
    max_idle_per_endpoint: 8
    idle_timeout: 2m
    lb_policy: round_robin
  - name: users-v2
    endpoints:
      - "[::1]:9004"
routes:
  - name: users-api
    match:
      host: API.Example.com
      path_prefix: /users
      methods: [get, POST]
      headers: {X-Version: "2", x-trace: {present: true}, x-user: {regex: "u[0-9]+"}}
      query: {v: "2", debug: {present: true}, page: {regex: "[0-9]+"}}
    backends: [{cluster: users, weight: 90}, {cluster: users-v2, weight: 10}]
    rewrite: {path_prefix: /v1/users, host: users.internal}
    timeout: 20s
  - name: wild
    match: {host: "*.example.com", path_regex: "/items/[0-9]+"}
    backend: users
  - name: health
    match: {path: /healthz}
    respond: {status: 200, body: "ok", content_type: application/json, headers: {X-Served-By: turnpike}}
  - name: moved
    match: {path_prefix: /old}
    redirect: {status: 301, location: "https://example.com/new"}
access_log: {path: /var/log/turnpike/access.log}
drain_timeout: 30s
)";

TEST(Load, FullConfigEveryKey) {
  const auto r = load_string(kFull, "full.yaml");
  ASSERT_TRUE(r.errors.empty()) << joined(error_lines(r));
  EXPECT_TRUE(r.warnings.empty()) << joined(testing::warning_lines(r));
  ASSERT_TRUE(r.config.has_value());
  const Config& c = *r.config;

  EXPECT_EQ(c.workers, 4U);
  EXPECT_EQ(c.admin.listen, "127.0.0.1:9911");
  EXPECT_EQ(c.admin.address, "127.0.0.1");
  EXPECT_EQ(c.admin.port, 9911);

  ASSERT_EQ(c.listeners.size(), 2U);
  const auto& l = c.listeners[0];
  EXPECT_EQ(l.name, "public");
  EXPECT_EQ(l.listen, "0.0.0.0:8080");
  EXPECT_EQ(l.address, "0.0.0.0");
  EXPECT_EQ(l.port, 8080);
  EXPECT_EQ(l.loc.line, 5);
  EXPECT_EQ(l.loc.column, 5);
  EXPECT_EQ(l.limits.max_header_bytes, 32U * 1024);
  EXPECT_EQ(l.limits.max_headers, 50U);
  EXPECT_EQ(l.limits.max_uri_bytes, 4U * 1024);
  EXPECT_EQ(l.limits.max_body_bytes, 10U * 1024 * 1024);
  EXPECT_EQ(l.limits.header_timeout, seconds(5));
  EXPECT_EQ(l.limits.idle_timeout, seconds(30));
  EXPECT_EQ(l.limits.body_timeout, milliseconds(1500));
  EXPECT_EQ(l.limits.max_connections, 1000U);
  EXPECT_EQ(c.listeners[1].address, "::1");
  EXPECT_EQ(c.listeners[1].port, 0);

  ASSERT_EQ(c.clusters.size(), 2U);
  const auto& users = c.clusters[0];
  EXPECT_EQ(users.name, "users");
  ASSERT_EQ(users.endpoints.size(), 2U);
  EXPECT_EQ(users.endpoints[0].written, "127.0.0.1:9001");
  EXPECT_EQ(users.endpoints[0].address, "127.0.0.1");
  EXPECT_EQ(users.endpoints[0].port, 9001);
  EXPECT_EQ(users.endpoints[0].weight, 1U);
  EXPECT_EQ(users.endpoints[1].port, 9002);
  EXPECT_EQ(users.endpoints[1].weight, 3U);
  EXPECT_EQ(users.connect_timeout, milliseconds(250));
  EXPECT_EQ(users.max_idle_per_endpoint, 8U);
  EXPECT_EQ(users.idle_timeout, seconds(120));
  EXPECT_EQ(users.lb_policy, "round_robin");
  EXPECT_EQ(c.clusters[1].endpoints[0].address, "::1");
  EXPECT_EQ(c.clusters[1].endpoints[0].port, 9004);
  EXPECT_EQ(c.find_cluster("users-v2"), &c.clusters[1]);
  EXPECT_EQ(c.find_cluster("nope"), nullptr);

  ASSERT_EQ(c.routes.size(), 4U);
  const auto& api = c.routes[0];
  EXPECT_EQ(api.name, "users-api");
  EXPECT_EQ(api.match.host, "api.example.com");
  EXPECT_EQ(api.match.path_prefix, "/users");
  EXPECT_EQ(api.match.methods, (std::vector<std::string>{"GET", "POST"}));
  ASSERT_EQ(api.match.headers.size(), 3U);
  EXPECT_EQ(api.match.headers[0].first, "x-version");
  EXPECT_EQ(api.match.headers[0].second.kind, ValueMatch::Kind::Exact);
  EXPECT_EQ(api.match.headers[0].second.value, "2");
  EXPECT_EQ(api.match.headers[1].first, "x-trace");
  EXPECT_EQ(api.match.headers[1].second.kind, ValueMatch::Kind::Present);
  EXPECT_EQ(api.match.headers[2].second.kind, ValueMatch::Kind::Regex);
  EXPECT_EQ(api.match.headers[2].second.value, "u[0-9]+");
  ASSERT_EQ(api.match.query.size(), 3U);
  EXPECT_EQ(api.match.query[0].first, "v");
  EXPECT_EQ(api.match.query[0].second.value, "2");
  EXPECT_EQ(api.match.query[1].second.kind, ValueMatch::Kind::Present);
  EXPECT_EQ(api.match.query[2].second.kind, ValueMatch::Kind::Regex);
  ASSERT_EQ(api.backends.size(), 2U);
  EXPECT_EQ(api.backends[0].cluster, "users");
  EXPECT_EQ(api.backends[0].weight, 90U);
  EXPECT_EQ(api.backends[1].cluster, "users-v2");
  EXPECT_EQ(api.backends[1].weight, 10U);
  EXPECT_EQ(api.rewrite.path_prefix, "/v1/users");
  EXPECT_EQ(api.rewrite.host, "users.internal");
  EXPECT_EQ(api.timeout, seconds(20));
  EXPECT_FALSE(api.respond.has_value());
  EXPECT_FALSE(api.redirect.has_value());

  const auto& wild = c.routes[1];
  EXPECT_EQ(wild.match.host, "*.example.com");
  EXPECT_EQ(wild.match.path_regex, "/items/[0-9]+");
  ASSERT_EQ(wild.backends.size(), 1U);
  EXPECT_EQ(wild.backends[0].cluster, "users");
  EXPECT_EQ(wild.backends[0].weight, 1U);

  const auto& health = c.routes[2];
  ASSERT_TRUE(health.respond.has_value());
  EXPECT_TRUE(health.backends.empty());
  EXPECT_EQ(health.match.path, "/healthz");
  EXPECT_EQ(health.respond->status, 200);
  EXPECT_EQ(health.respond->body, "ok");
  EXPECT_EQ(health.respond->content_type, "application/json");
  ASSERT_EQ(health.respond->headers.size(), 1U);
  EXPECT_EQ(health.respond->headers[0].first, "x-served-by");
  EXPECT_EQ(health.respond->headers[0].second, "turnpike");

  const auto& moved = c.routes[3];
  ASSERT_TRUE(moved.redirect.has_value());
  EXPECT_EQ(moved.redirect->status, 301);
  EXPECT_EQ(moved.redirect->location, "https://example.com/new");
  EXPECT_EQ(moved.loc.line, 45);

  EXPECT_EQ(c.access_log.path, "/var/log/turnpike/access.log");
  EXPECT_EQ(c.drain_timeout, seconds(30));
  EXPECT_EQ(c.source_file, "full.yaml");
}

TEST(Load, Defaults) {
  const Config c = expect_valid(R"(listeners:
  - listen: 127.0.0.1:0
clusters:
  - name: users
    endpoints: ["127.0.0.1:9001"]
routes:
  - backend: users
  - match: {path: /x}
    respond: {}
  - redirect: {location: /elsewhere}
)");
  EXPECT_EQ(c.workers, 0U);
  EXPECT_EQ(c.admin.listen, "127.0.0.1:9901");
  EXPECT_EQ(c.admin.port, 9901);
  ASSERT_EQ(c.listeners.size(), 1U);
  EXPECT_EQ(c.listeners[0].name, "listener-0");
  const Limits& lim = c.listeners[0].limits;
  EXPECT_EQ(lim.max_header_bytes, 64U * 1024);
  EXPECT_EQ(lim.max_headers, 100U);
  EXPECT_EQ(lim.max_uri_bytes, 8U * 1024);
  EXPECT_FALSE(lim.max_body_bytes.has_value());
  EXPECT_EQ(lim.header_timeout, seconds(10));
  EXPECT_EQ(lim.idle_timeout, seconds(60));
  EXPECT_EQ(lim.body_timeout, seconds(60));
  EXPECT_EQ(lim.max_connections, 50'000U);
  const Cluster& cl = c.clusters[0];
  EXPECT_EQ(cl.connect_timeout, seconds(1));
  EXPECT_EQ(cl.max_idle_per_endpoint, 1024U);
  EXPECT_EQ(cl.idle_timeout, seconds(60));
  EXPECT_EQ(cl.lb_policy, "round_robin");
  ASSERT_EQ(c.routes.size(), 3U);
  EXPECT_EQ(c.routes[0].name, "route-0");
  EXPECT_EQ(c.routes[1].name, "route-1");
  EXPECT_EQ(c.routes[2].name, "route-2");
  EXPECT_EQ(c.routes[0].timeout, seconds(15));
  EXPECT_FALSE(c.routes[0].match.host || c.routes[0].match.path || c.routes[0].match.path_prefix ||
               c.routes[0].match.path_regex);
  EXPECT_EQ(c.routes[1].respond->status, 200);
  EXPECT_EQ(c.routes[1].respond->body, "");
  EXPECT_EQ(c.routes[1].respond->content_type, "text/plain");
  EXPECT_EQ(c.routes[2].redirect->status, 302);
  EXPECT_EQ(c.access_log.path, "stdout");
  EXPECT_EQ(c.drain_timeout, seconds(15));
}

TEST(Load, SmallValueForms) {
  const Config c = expect_valid(R"(workers: auto
listeners:
  - listen: 127.0.0.1:1
    limits: {max_body_bytes: unlimited, max_header_bytes: 1KiB}
  - listen: 127.0.0.1:2
    limits: {max_body_bytes: 0}
    defer_accept: false
clusters:
  - name: users
    endpoints: ["127.0.0.1:9001"]
routes:
  - match: {methods: delete, path: /a}
    backend: users
  - match: {path: /p}
    respond: {status: 204}
drain_timeout: 0
)");
  EXPECT_EQ(c.workers, 0U);
  EXPECT_FALSE(c.listeners[0].limits.max_body_bytes.has_value());
  EXPECT_EQ(c.listeners[0].limits.max_header_bytes, 1024U);
  EXPECT_EQ(c.listeners[1].limits.max_body_bytes, 0U);
  EXPECT_TRUE(c.listeners[0].defer_accept);
  EXPECT_FALSE(c.listeners[1].defer_accept);
  EXPECT_EQ(c.routes[0].match.methods, std::vector<std::string>{"DELETE"});
  EXPECT_EQ(c.routes[1].respond->status, 204);
  EXPECT_EQ(c.drain_timeout, milliseconds(0));
}

TEST(Load, LoadBalancingPoliciesAndHashKeys) {
  const Config c = expect_valid(R"(listeners:
  - listen: 127.0.0.1:1
clusters:
  - {name: a, endpoints: ["127.0.0.1:9001"], lb_policy: least_request}
  - {name: b, endpoints: ["127.0.0.1:9001"], lb_policy: random}
  - {name: c, endpoints: ["127.0.0.1:9001"], lb_policy: ring_hash, hash_on: {header: X-User}}
  - {name: d, endpoints: ["127.0.0.1:9001"], lb_policy: maglev, hash_on: {cookie: sid}}
  - {name: e, endpoints: ["127.0.0.1:9001"], lb_policy: maglev, hash_on: {query: tenant}}
  - {name: f, endpoints: ["127.0.0.1:9001"], lb_policy: ring_hash, hash_on: client_ip}
  - {name: g, endpoints: ["127.0.0.1:9001"], lb_policy: ring_hash, hash_on: consumer}
routes:
  - backend: a
)");
  using Kind = HashOn::Kind;
  EXPECT_EQ(c.clusters[0].lb_policy, "least_request");
  EXPECT_EQ(c.clusters[0].hash_on.kind, Kind::None);
  EXPECT_EQ(c.clusters[1].lb_policy, "random");
  EXPECT_EQ(c.clusters[2].hash_on.kind, Kind::Header);
  EXPECT_EQ(c.clusters[2].hash_on.name, "x-user");  // header names are lower-cased
  EXPECT_EQ(c.clusters[3].hash_on.kind, Kind::Cookie);
  EXPECT_EQ(c.clusters[3].hash_on.name, "sid");
  EXPECT_EQ(c.clusters[4].hash_on.kind, Kind::Query);
  EXPECT_EQ(c.clusters[4].hash_on.name, "tenant");
  EXPECT_EQ(c.clusters[5].hash_on.kind, Kind::ClientIp);
  EXPECT_EQ(c.clusters[6].hash_on.kind, Kind::Consumer);
}

TEST(Load, OutlierDetectionAndPanicThreshold) {
  const Config c = expect_valid(R"(listeners:
  - listen: 127.0.0.1:1
clusters:
  - {name: a, endpoints: ["127.0.0.1:9001"]}
  - name: b
    endpoints: ["127.0.0.1:9001"]
    outlier_detection: {consecutive_5xx: 0, consecutive_gateway_failures: 7,
                        base_ejection_time: 2s, max_ejection_time: 1m, max_ejection_percent: 100}
    panic_threshold: 0
  - {name: c, endpoints: ["127.0.0.1:9001"], outlier_detection: off}
routes:
  - backend: a
)");
  const auto& a = c.clusters[0].outlier_detection;
  EXPECT_TRUE(a.enabled);
  EXPECT_EQ(a.consecutive_5xx, 5U);
  EXPECT_EQ(a.consecutive_gateway_failures, 3U);
  EXPECT_EQ(a.base_ejection_time, seconds(30));
  EXPECT_EQ(a.max_ejection_time, seconds(300));
  EXPECT_EQ(a.max_ejection_percent, 50U);
  EXPECT_EQ(c.clusters[0].panic_threshold, 50U);
  const auto& b = c.clusters[1].outlier_detection;
  EXPECT_EQ(b.consecutive_5xx, 0U);
  EXPECT_EQ(b.consecutive_gateway_failures, 7U);
  EXPECT_EQ(b.base_ejection_time, seconds(2));
  EXPECT_EQ(b.max_ejection_time, seconds(60));
  EXPECT_EQ(b.max_ejection_percent, 100U);
  EXPECT_EQ(c.clusters[1].panic_threshold, 0U);
  EXPECT_FALSE(c.clusters[2].outlier_detection.enabled);
}

TEST(Load, HealthCheck) {
  const Config c = expect_valid(R"(listeners:
  - listen: 127.0.0.1:1
clusters:
  - {name: none, endpoints: ["127.0.0.1:9001"]}
  - name: http
    endpoints: ["127.0.0.1:9001"]
    health_check:
      http: {path: /healthz, host: health.internal, expected_statuses: ["200-299", 304]}
      interval: 2s
      unhealthy_interval: 500ms
      timeout: 3s
      unhealthy_threshold: 3
      healthy_threshold: 1
  - {name: tcp, endpoints: ["127.0.0.1:9001"], health_check: {tcp: {}}}
  - name: grpc
    endpoints: ["127.0.0.1:9001"]
    protocol: h2c
    health_check: {grpc: {service: pkg.Svc}}
  - {name: defaults, endpoints: ["127.0.0.1:9001"], health_check: {http: }}
routes:
  - backend: none
)");
  using Kind = config::HealthCheck::Kind;
  EXPECT_EQ(c.clusters[0].health_check.kind, Kind::None);
  const auto& h = c.clusters[1].health_check;
  EXPECT_EQ(h.kind, Kind::Http);
  EXPECT_EQ(h.path, "/healthz");
  EXPECT_EQ(h.host, "health.internal");
  const std::vector<std::pair<int, int>> statuses{{200, 299}, {304, 304}};
  EXPECT_EQ(h.expected_statuses, statuses);
  EXPECT_EQ(h.interval, seconds(2));
  EXPECT_EQ(h.unhealthy_interval, milliseconds(500));
  EXPECT_EQ(h.timeout, seconds(3));
  EXPECT_EQ(h.unhealthy_threshold, 3U);
  EXPECT_EQ(h.healthy_threshold, 1U);
  EXPECT_EQ(c.clusters[2].health_check.kind, Kind::Tcp);
  EXPECT_EQ(c.clusters[3].health_check.kind, Kind::Grpc);
  EXPECT_EQ(c.clusters[3].health_check.service, "pkg.Svc");
  const auto& d = c.clusters[4].health_check;
  EXPECT_EQ(d.kind, Kind::Http);
  EXPECT_EQ(d.path, "/");
  const std::vector<std::pair<int, int>> default_statuses{{200, 399}};
  EXPECT_EQ(d.expected_statuses, default_statuses);
  EXPECT_EQ(d.interval, seconds(5));
  EXPECT_FALSE(d.unhealthy_interval);
  EXPECT_EQ(d.timeout, seconds(1));
  EXPECT_EQ(d.unhealthy_threshold, 2U);
  EXPECT_EQ(d.healthy_threshold, 2U);
}

TEST(Load, ClusterLimits) {
  const Config c = expect_valid(R"(listeners:
  - listen: 127.0.0.1:1
clusters:
  - {name: a, endpoints: ["127.0.0.1:9001"]}
  - name: b
    endpoints: ["127.0.0.1:9001"]
    limits: {max_connections: 10, max_pending_requests: 20, max_requests: 30, max_retries: 0}
routes:
  - backend: a
)");
  const auto& a = c.clusters[0].limits;
  EXPECT_EQ(a.max_connections, 1024U);
  EXPECT_EQ(a.max_pending_requests, 1024U);
  EXPECT_EQ(a.max_requests, 1024U);
  EXPECT_EQ(a.max_retries, 3U);
  const auto& b = c.clusters[1].limits;
  EXPECT_EQ(b.max_connections, 10U);
  EXPECT_EQ(b.max_pending_requests, 20U);
  EXPECT_EQ(b.max_requests, 30U);
  EXPECT_EQ(b.max_retries, 0U);
}

TEST(Load, RouteRetry) {
  const Config c = expect_valid(R"(listeners:
  - listen: 127.0.0.1:1
clusters:
  - {name: a, endpoints: ["127.0.0.1:9001"]}
routes:
  - {name: none, match: {path: /n}, backend: a}
  - {name: defaults, match: {path: /d}, backend: a, retry: {}}
  - name: full
    backend: a
    retry:
      attempts: 4
      on: [connect-failure, reset, retriable-status]
      statuses: [429, 503]
      per_try_timeout: 2s
      backoff: {base: 10ms, max: 1s}
      budget: {percent: 50, min_concurrency: 1}
      methods: [GET, POST]
)");
  EXPECT_FALSE(c.routes[0].retry);
  ASSERT_TRUE(c.routes[1].retry);
  const auto& d = *c.routes[1].retry;
  EXPECT_EQ(d.attempts, 2U);
  EXPECT_TRUE(d.on_connect_failure && d.on_refused_stream && d.on_reset && d.on_timeout &&
              d.on_gateway_error);
  EXPECT_FALSE(d.on_5xx);
  EXPECT_FALSE(d.per_try_timeout);
  EXPECT_EQ(d.backoff_base, milliseconds(25));
  EXPECT_EQ(d.backoff_max, milliseconds(250));
  EXPECT_EQ(d.budget_percent, 20U);
  EXPECT_EQ(d.budget_min_concurrency, 3U);
  const std::vector<std::string> methods{"GET", "HEAD", "OPTIONS", "PUT", "DELETE"};
  EXPECT_EQ(d.methods, methods);
  const auto& f = *c.routes[2].retry;
  EXPECT_EQ(f.attempts, 4U);
  EXPECT_TRUE(f.on_connect_failure && f.on_reset);
  EXPECT_FALSE(f.on_refused_stream || f.on_timeout || f.on_gateway_error || f.on_5xx);
  const std::vector<int> statuses{429, 503};
  EXPECT_EQ(f.statuses, statuses);
  EXPECT_EQ(f.per_try_timeout, seconds(2));
  EXPECT_EQ(f.backoff_base, milliseconds(10));
  EXPECT_EQ(f.backoff_max, seconds(1));
  EXPECT_EQ(f.budget_percent, 50U);
  EXPECT_EQ(f.budget_min_concurrency, 1U);
  const std::vector<std::string> fm{"GET", "POST"};
  EXPECT_EQ(f.methods, fm);
}

TEST(Load, RouteRequestBuffering) {
  const Config c = expect_valid(R"(listeners:
  - listen: 127.0.0.1:1
clusters:
  - {name: a, endpoints: ["127.0.0.1:9001"]}
routes:
  - {name: none, match: {path: /n}, backend: a}
  - {name: defaults, match: {path: /d}, backend: a, request_buffering: {}}
  - {name: sized, match: {path: /s}, backend: a, request_buffering: {max_bytes: 64KiB}}
  - {name: bytes, match: {path: /b}, backend: a, request_buffering: {max_bytes: 1}}
  - {name: largest, match: {path: /l}, backend: a, request_buffering: {max_bytes: 64MiB}}
  - {name: on, match: {path: /on}, backend: a, request_buffering: on}
  - {name: off, match: {path: /off}, backend: a, request_buffering: off}
  - {name: false, match: {path: /f}, backend: a, request_buffering: false}
)");
  ASSERT_EQ(c.routes.size(), 8U);
  EXPECT_FALSE(c.routes[0].request_buffering);
  ASSERT_TRUE(c.routes[1].request_buffering);
  EXPECT_EQ(c.routes[1].request_buffering->max_bytes, 1024U * 1024);
  ASSERT_TRUE(c.routes[2].request_buffering);
  EXPECT_EQ(c.routes[2].request_buffering->max_bytes, 64U * 1024);
  ASSERT_TRUE(c.routes[3].request_buffering);
  EXPECT_EQ(c.routes[3].request_buffering->max_bytes, 1U);
  ASSERT_TRUE(c.routes[4].request_buffering);
  EXPECT_EQ(c.routes[4].request_buffering->max_bytes, 64U * 1024 * 1024);
  ASSERT_TRUE(c.routes[5].request_buffering);
  EXPECT_EQ(c.routes[5].request_buffering->max_bytes, 1024U * 1024);
  EXPECT_FALSE(c.routes[6].request_buffering);
  EXPECT_FALSE(c.routes[7].request_buffering);
  // The effective config says it (a reload's dry run compares routes by it) and loads back.
  const auto j = to_json(c);
  EXPECT_FALSE(j["routes"][0].contains("request_buffering"));
  EXPECT_EQ(j["routes"][2]["request_buffering"]["max_bytes"], 64 * 1024);
  const auto again = load_string(j.dump(), "effective.json");
  ASSERT_TRUE(again.config.has_value()) << joined(error_lines(again));
  EXPECT_EQ(to_json(*again.config), j);
}

TEST(Load, DigestIsSha256OfText) {
  const Config c = expect_valid(testing::kPreamble);
  EXPECT_EQ(c.digest.size(), 64U);
  const Config again = expect_valid(testing::kPreamble);
  EXPECT_EQ(c.digest, again.digest);
  const Config other = expect_valid(std::string(testing::kPreamble) + "workers: 2\n");
  EXPECT_NE(c.digest, other.digest);
  // Known answer, from `printf '%s' "$text" | sha256sum`.
  const auto r = load_string("listeners: [{listen: '127.0.0.1:0'}]", "x");
  ASSERT_TRUE(r.config.has_value());
  EXPECT_EQ(r.config->digest, "245674c7b09871b96675ed3a8f2e6ee1af9c06fa817feb4796eac2ce3ae633ad");
}

TEST(Load, FromFile) {
  const std::string path = ::testing::TempDir() + "/turnpike_config_test.yaml";
  {
    std::ofstream out(path);
    out << "listeners:\n  - listen: 127.0.0.1:0\nworkerz: 2\n";
  }
  const auto r = load_file(path);
  EXPECT_EQ(
      error_lines(r),
      (std::vector<std::string>{path + ":3:1: unknown key 'workerz' (did you mean 'workers'?)"}));
  std::remove(path.c_str());

  const auto missing = load_file("/nonexistent/turnpike.yaml");
  EXPECT_EQ(error_lines(missing),
            (std::vector<std::string>{
                "/nonexistent/turnpike.yaml: cannot read config file: No such file or directory"}));
}

TEST(ToJson, EffectiveConfigWithDefaults) {
  const Config c = expect_valid(R"(listeners:
  - listen: 127.0.0.1:0
clusters:
  - name: users
    endpoints: ["127.0.0.1:9001"]
routes:
  - match: {path_prefix: /users, headers: {x-v: {present: true}}}
    backend: users
)");
  const auto j = to_json(c);
  EXPECT_EQ(j["workers"], "auto");
  EXPECT_EQ(j["admin"]["listen"], "127.0.0.1:9901");
  EXPECT_EQ(j["drain_timeout"], "15s");
  EXPECT_EQ(j["access_log"]["path"], "stdout");
  const auto& limits = j["listeners"][0]["limits"];
  EXPECT_EQ(limits["max_header_bytes"], 65536);
  EXPECT_EQ(limits["max_uri_bytes"], 8192);
  EXPECT_TRUE(limits["max_body_bytes"].is_null());
  EXPECT_EQ(limits["header_timeout"], "10s");
  EXPECT_EQ(j["listeners"][0]["name"], "listener-0");
  EXPECT_EQ(j["clusters"][0]["connect_timeout"], "1s");
  EXPECT_EQ(j["clusters"][0]["endpoints"][0]["address"], "127.0.0.1:9001");
  EXPECT_EQ(j["routes"][0]["name"], "route-0");
  EXPECT_EQ(j["routes"][0]["timeout"], "15s");
  EXPECT_EQ(j["routes"][0]["backends"][0]["cluster"], "users");
  EXPECT_EQ(j["routes"][0]["backends"][0]["weight"], 1);
  EXPECT_EQ(j["routes"][0]["match"]["headers"]["x-v"]["present"], true);
}

// JSON is YAML: the effective config loads back to the same effective config.
TEST(ToJson, RoundTrips) {
  const auto first = load_string(kFull, "full.yaml");
  ASSERT_TRUE(first.config.has_value()) << joined(error_lines(first));
  const auto j = to_json(*first.config);
  EXPECT_EQ(j["listeners"][0]["limits"]["body_timeout"], "1500ms");
  EXPECT_EQ(j["listeners"][0]["limits"]["max_body_bytes"], 10 * 1024 * 1024);
  EXPECT_EQ(j["clusters"][0]["idle_timeout"], "2m");
  const auto second = load_string(j.dump(2), "effective.json");
  ASSERT_TRUE(second.config.has_value()) << joined(error_lines(second)) << j.dump(2);
  EXPECT_EQ(to_json(*second.config), j);
}

}  // namespace
}  // namespace turnpike::config

namespace turnpike::config {
namespace {

TEST(Load, GenerationLimits) {
  const std::string pre = testing::kPreamble;
  auto c = testing::expect_valid(pre);
  EXPECT_EQ(c.reload.max_live_generations, 8u);
  EXPECT_EQ(c.reload.generation_drain_timeout, std::chrono::minutes(10));
  c = testing::expect_valid(pre +
                            "reload: {max_live_generations: 3, generation_drain_timeout: 30s}\n");
  EXPECT_EQ(c.reload.max_live_generations, 3u);
  EXPECT_EQ(c.reload.generation_drain_timeout, std::chrono::seconds(30));
  // The top-level shorthand.
  c = testing::expect_valid(pre + "max_live_generations: 5\ngeneration_drain_timeout: 2m\n");
  EXPECT_EQ(c.reload.max_live_generations, 5u);
  EXPECT_EQ(c.reload.generation_drain_timeout, std::chrono::minutes(2));
  testing::expect_errors(pre + "max_live_generations: 4\nreload: {max_live_generations: 4}\n",
                         {"t.yaml:9:23: max_live_generations: also set under reload:; set it "
                          "in one place"});
  const auto r = load_string(pre + "reload: {max_live_generations: 1}\n", "t.yaml");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].to_string().find("reload.max_live_generations"), std::string::npos)
      << r.errors[0].to_string();
}

}  // namespace
}  // namespace turnpike::config
