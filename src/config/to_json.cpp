// The effective config as JSON. The output is itself a valid config (JSON is YAML): loading it
// gives back the same Config, with every default written out.
#include "turnpike/config/to_json.h"

#include <algorithm>

namespace turnpike::config {
namespace {

using nlohmann::json;

json value_matches(const std::vector<std::pair<std::string, ValueMatch>>& matches) {
  json out = json::object();
  for (const auto& [name, m] : matches) {
    switch (m.kind) {
      case ValueMatch::Kind::Exact:
        out[name] = m.value;
        break;
      case ValueMatch::Kind::Regex:
        out[name] = {{"regex", m.value}};
        break;
      case ValueMatch::Kind::Present:
        out[name] = {{"present", true}};
        break;
    }
  }
  return out;
}

json limits_json(const Limits& l) {
  return {
      {"max_header_bytes", l.max_header_bytes},
      {"max_headers", l.max_headers},
      {"max_uri_bytes", l.max_uri_bytes},
      {"max_body_bytes", l.max_body_bytes ? json(*l.max_body_bytes) : json(nullptr)},
      {"header_timeout", format_duration(l.header_timeout)},
      {"idle_timeout", format_duration(l.idle_timeout)},
      {"body_timeout", format_duration(l.body_timeout)},
      {"max_connections", l.max_connections},
  };
}

json route_json(const Route& r) {
  json match = json::object();
  const auto& m = r.match;
  if (m.host) match["host"] = *m.host;
  if (m.path) match["path"] = *m.path;
  if (m.path_prefix) match["path_prefix"] = *m.path_prefix;
  if (m.path_regex) match["path_regex"] = *m.path_regex;
  if (!m.methods.empty()) match["methods"] = m.methods;
  if (!m.headers.empty()) match["headers"] = value_matches(m.headers);
  if (!m.query.empty()) match["query"] = value_matches(m.query);

  json out = {{"name", r.name}, {"match", std::move(match)}};
  if (r.respond) {
    json headers = json::object();
    for (const auto& [name, value] : r.respond->headers)
      headers[name] = value;
    out["respond"] = {{"status", r.respond->status},
                      {"body", r.respond->body},
                      {"content_type", r.respond->content_type},
                      {"headers", std::move(headers)}};
  } else if (r.redirect) {
    out["redirect"] = {{"status", r.redirect->status}, {"location", r.redirect->location}};
  } else {
    json backends = json::array();
    for (const auto& b : r.backends)
      backends.push_back({{"cluster", b.cluster}, {"weight", b.weight}});
    out["backends"] = std::move(backends);
  }
  if (r.rewrite.path_prefix || r.rewrite.host) {
    json rewrite = json::object();
    if (r.rewrite.path_prefix) rewrite["path_prefix"] = *r.rewrite.path_prefix;
    if (r.rewrite.host) rewrite["host"] = *r.rewrite.host;
    out["rewrite"] = std::move(rewrite);
  }
  out["timeout"] = format_duration(r.timeout);
  out["idle_timeout"] = format_duration(r.idle_timeout);
  if (r.mirror) out["mirror"] = {{"cluster", r.mirror->cluster}, {"percent", r.mirror->percent}};
  if (r.request_buffering)
    out["request_buffering"] = {{"max_bytes", r.request_buffering->max_bytes}};
  if (r.retry) {
    const RetryPolicy& p = *r.retry;
    json on = json::array();
    if (p.on_5xx)
      on.push_back("5xx");
    else if (p.on_gateway_error)
      on.push_back("gateway-error");
    if (p.on_connect_failure && !p.on_gateway_error) on.push_back("connect-failure");
    if (p.on_reset && !p.on_gateway_error) on.push_back("reset");
    if (p.on_refused_stream) on.push_back("refused-stream");
    if (!p.statuses.empty()) on.push_back("retriable-status");
    json retry = {
        {"attempts", p.attempts},
        {"on", on},
        {"backoff",
         {{"base", format_duration(p.backoff_base)}, {"max", format_duration(p.backoff_max)}}},
        {"budget", {{"percent", p.budget_percent}, {"min_concurrency", p.budget_min_concurrency}}},
        {"methods", p.methods}};
    if (!p.statuses.empty()) retry["statuses"] = p.statuses;
    if (p.per_try_timeout) retry["per_try_timeout"] = format_duration(*p.per_try_timeout);
    out["retry"] = std::move(retry);
  }
  out["websocket"] =
      r.websocket ? json{{"idle_timeout", format_duration(r.websocket_idle_timeout)}} : json(false);
  return out;
}

}  // namespace

nlohmann::json to_json(const Config& config) {
  json listeners = json::array();
  for (const auto& l : config.listeners) {
    json entry = {{"name", l.name}, {"listen", l.listen}, {"limits", limits_json(l.limits)}};
    json protocols = json::array();
    if (l.http1) protocols.push_back("http1");
    if (l.h2) protocols.push_back("h2");
    if (l.h2c) protocols.push_back("h2c");
    entry["protocols"] = protocols;
    entry["defer_accept"] = l.defer_accept;
    const auto& h = l.http2;
    entry["http2"] = {{"max_concurrent_streams", h.max_concurrent_streams},
                      {"initial_window_size", h.initial_window_size},
                      {"connection_window_size", h.connection_window_size},
                      {"max_frame_size", h.max_frame_size},
                      {"header_table_size", h.header_table_size},
                      {"max_resets_burst", h.max_resets_burst},
                      {"max_resets_per_second", h.max_resets_per_second},
                      {"max_continuations", h.max_continuations},
                      {"max_control_frames_burst", h.max_control_frames_burst},
                      {"max_control_frames_per_second", h.max_control_frames_per_second},
                      {"max_empty_frames", h.max_empty_frames}};
    if (l.tls) {
      json certs = json::array();
      for (const auto& c : l.tls->certificates)
        certs.push_back({{"cert", c.cert}, {"key", c.key}});
      entry["tls"] = {{"certificates", certs},
                      {"min_version", l.tls->min_version},
                      {"ciphers", l.tls->ciphers},
                      {"client_ca", l.tls->client_ca},
                      {"require_client_cert", l.tls->require_client_cert},
                      {"forward_client_cert", l.tls->forward_client_cert},
                      {"session_tickets", l.tls->session_tickets}};
    }
    listeners.push_back(std::move(entry));
  }
  json clusters = json::array();
  for (const auto& c : config.clusters) {
    // As written: a DNS cluster's endpoints are its names (what they resolve to is in
    // GET /clusters), so that an address change is not a config change.
    json endpoints = json::array();
    for (const auto& e : c.dns_discovery ? c.names : c.endpoints) {
      endpoints.push_back({{"address", e.written}, {"weight", e.weight}});
    }
    json entry = {{"name", c.name},
                  {"discovery", c.dns_discovery ? "dns" : "static"},
                  {"endpoints", std::move(endpoints)},
                  {"connect_timeout", format_duration(c.connect_timeout)},
                  {"max_idle_per_endpoint", c.max_idle_per_endpoint},
                  {"idle_timeout", format_duration(c.idle_timeout)},
                  {"lb_policy", c.lb_policy}};
    switch (c.hash_on.kind) {
      case HashOn::Kind::None:
        break;
      case HashOn::Kind::Header:
        entry["hash_on"] = {{"header", c.hash_on.name}};
        break;
      case HashOn::Kind::Cookie:
        entry["hash_on"] = {{"cookie", c.hash_on.name}};
        break;
      case HashOn::Kind::Query:
        entry["hash_on"] = {{"query", c.hash_on.name}};
        break;
      case HashOn::Kind::ClientIp:
        entry["hash_on"] = "client_ip";
        break;
      case HashOn::Kind::Consumer:
        entry["hash_on"] = "consumer";
        break;
    }
    if (c.dns_discovery) {
      static constexpr const char* kFamily[] = {"auto", "v4", "v6"};
      json resolvers = json::array();
      for (std::size_t at = 0; at < c.dns.resolvers.size();) {
        const std::size_t comma = std::min(c.dns.resolvers.find(',', at), c.dns.resolvers.size());
        resolvers.push_back(c.dns.resolvers.substr(at, comma - at));
        at = comma + 1;
      }
      entry["dns"] = {{"refresh", format_duration(c.dns.refresh)},
                      {"respect_ttl", c.dns.respect_ttl},
                      {"family", kFamily[static_cast<int>(c.dns.family)]},
                      {"resolvers", std::move(resolvers)}};
    }
    if (c.outlier_detection.enabled) {
      const auto& od = c.outlier_detection;
      entry["outlier_detection"] = {
          {"consecutive_5xx", od.consecutive_5xx},
          {"consecutive_gateway_failures", od.consecutive_gateway_failures},
          {"base_ejection_time", format_duration(od.base_ejection_time)},
          {"max_ejection_time", format_duration(od.max_ejection_time)},
          {"max_ejection_percent", od.max_ejection_percent}};
    } else {
      entry["outlier_detection"] = "off";
    }
    if (c.health_check.kind != HealthCheck::Kind::None) {
      const auto& hc = c.health_check;
      nlohmann::json check;
      if (hc.kind == HealthCheck::Kind::Http) {
        nlohmann::json statuses = nlohmann::json::array();
        for (const auto& [lo, hi] : hc.expected_statuses)
          statuses.push_back(lo == hi ? std::to_string(lo)
                                      : std::to_string(lo) + "-" + std::to_string(hi));
        check["http"] = {{"path", hc.path}, {"host", hc.host}, {"expected_statuses", statuses}};
      } else if (hc.kind == HealthCheck::Kind::Tcp) {
        check["tcp"] = nlohmann::json::object();
      } else {
        check["grpc"] = {{"service", hc.service}, {"host", hc.host}};
      }
      check["interval"] = format_duration(hc.interval);
      if (hc.unhealthy_interval)
        check["unhealthy_interval"] = format_duration(*hc.unhealthy_interval);
      check["timeout"] = format_duration(hc.timeout);
      check["unhealthy_threshold"] = hc.unhealthy_threshold;
      check["healthy_threshold"] = hc.healthy_threshold;
      entry["health_check"] = std::move(check);
    }
    entry["limits"] = {{"max_connections", c.limits.max_connections},
                       {"max_pending_requests", c.limits.max_pending_requests},
                       {"max_requests", c.limits.max_requests},
                       {"max_retries", c.limits.max_retries}};
    entry["panic_threshold"] = c.panic_threshold;
    entry["protocol"] = c.protocol;
    entry["http2"] = {{"max_concurrent_streams", c.http2.max_concurrent_streams},
                      {"initial_window_size", c.http2.initial_window_size},
                      {"connection_window_size", c.http2.connection_window_size}};
    if (c.tls)
      entry["tls"] = {{"ca", c.tls->ca},
                      {"server_name", c.tls->server_name},
                      {"cert", c.tls->cert},
                      {"key", c.tls->key},
                      {"verify", c.tls->verify}};
    clusters.push_back(std::move(entry));
  }
  json routes = json::array();
  for (const auto& r : config.routes)
    routes.push_back(route_json(r));
  for (std::size_t i = 0; i < config.listeners.size(); ++i)
    if (!config.listeners[i].filters.empty()) listeners[i]["filters"] = config.listeners[i].filters;
  for (std::size_t i = 0; i < config.routes.size(); ++i)
    if (!config.routes[i].filters.empty()) routes[i]["filters"] = config.routes[i].filters;
  json consumers = json::array();
  for (const auto& c : config.consumers) {
    json entry = {{"name", c.name}, {"groups", c.groups}};
    json keys = json::array();
    for (const auto& k : c.api_key_sha256)
      keys.push_back("sha256:" + k);
    entry["api_keys"] = std::move(keys);
    if (!c.password_hash.empty()) entry["basic_auth"] = {{"password_hash", c.password_hash}};
    consumers.push_back(std::move(entry));
  }
  json filters = json::object();
  for (const auto& f : config.filters)
    filters[f.name] = json::parse(f.written);

  json out = {
      {"workers", config.workers == 0 ? json("auto") : json(config.workers)},
      {"admin", {{"listen", config.admin.listen}}},
      {"listeners", std::move(listeners)},
      {"clusters", std::move(clusters)},
      {"routes", std::move(routes)},
      {"consumers", std::move(consumers)},
      {"filters", std::move(filters)},
      {"access_log", {{"path", config.access_log.path}}},
      {"drain_timeout", format_duration(config.drain_timeout)},
      {"reload",
       {{"watch", config.reload.watch},
        {"debounce", format_duration(config.reload.debounce)},
        {"max_live_generations", config.reload.max_live_generations},
        {"generation_drain_timeout", format_duration(config.reload.generation_drain_timeout)}}},
  };
  if (config.redis) {
    const auto& r = *config.redis;
    out["redis"] = {{"address", r.address},
                    {"connect_timeout", format_duration(r.connect_timeout)},
                    {"timeout", format_duration(r.timeout)},
                    {"database", r.database}};
    if (!r.password.empty()) out["redis"]["password"] = "<redacted>";
  }
  return out;
}

}  // namespace turnpike::config
