// YAML -> Config. The only place yaml-cpp is used: every yaml-cpp exception is caught here
// and becomes a ConfigError. Each value is checked where it is read, so its error points at
// its own node; checks across values live in validate.cpp.
#include <re2/re2.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <unordered_map>

#include "config/address.h"
#include "config/diagnostics.h"
#include "config/digest.h"
#include "config/filter_parsers.h"
#include "config/tls_files.h"
#include "config/units.h"
#include "config/validate.h"
#include "config/value_reader.h"
#include "turnpike/config/config.h"

namespace turnpike::config {
namespace {

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;

class Loader : public ValueReader {
 public:
  explicit Loader(Diagnostics& diag) : ValueReader(diag) {}

  Config load(const YAML::Node& root);

 private:
  // Sections.
  void load_workers(const Value& v, Config& c);
  void load_generation_limits(const Fields& top, const std::optional<Fields>& reload,
                              ReloadSettings& out);
  void load_admin(const Value& v, Admin& admin);
  bool listen_address(const Value& v, bool allow_port_zero, std::string& written,
                      std::string& address, std::uint16_t& port);
  void load_listeners(const Value& v, Config& c);
  void load_limits(const Value& v, Limits& limits);
  void load_listener_tls(const Value& v, ListenerTls& tls);
  void load_protocols(const Value& v, Listener& l);
  void load_http2(const Value& v, Http2Settings& h2);
  void load_clusters(const Value& v, Config& c);
  // `resolve`: look a name up now (static clusters); else leave `address` empty (discovery).
  std::optional<Endpoint> load_endpoint(const Value& v, bool resolve = true);
  void load_dns(const Value& v, DnsSettings& out);
  void load_hash_on(const Value& v, HashOn& out);
  void load_outlier_detection(const Value& v, OutlierDetection& out);
  void load_health_check(const Value& v, const Cluster& cluster, HealthCheck& out);
  void load_retry(const Value& v, RetryPolicy& out);
  void load_request_buffering(const Value& v, std::optional<RequestBuffering>& out);
  void load_routes(const Value& v, Config& c);
  void load_route(const Value& v, std::size_t index, Route& r);
  void load_match(const Value& v, RouteMatch& m);
  std::optional<std::string> route_path(const Value& v);
  void load_value_matches(const Value& v, bool header_names,
                          std::vector<std::pair<std::string, ValueMatch>>& out);
  void load_respond(const Value& v, DirectResponse& r);
  void load_redirect(const Value& v, Redirect& r);
  void load_filter_names(const Value& v, std::vector<std::string>& out);
  void load_consumers(const Value& v, Config& c);
  void load_redis(const Value& v, Redis& r);
  void load_filters(const Value& v, Config& c);

  std::unordered_map<std::string, Resolution> resolved_;  // one lookup per distinct name
};

// ---- sections -----------------------------------------------------------------------------

Config Loader::load(const YAML::Node& root) {
  Config c;
  const Value top{root, "", {1, 1}};
  if (root.IsNull()) {
    d_.error("listeners", {1, 1}, "at least one listener is required (the file is empty)");
    return c;
  }
  if (!root.IsMap()) {
    error(top, "expected a map at the top level, got " + describe(root));
    return c;
  }
  const auto f = fields(top, {"workers", "admin", "listeners", "clusters", "routes", "access_log",
                              "drain_timeout", "reload", "max_live_generations",
                              "generation_drain_timeout", "consumers", "redis", "filters"});
  if (!f) return c;
  if (const auto* v = f->get("workers")) load_workers(*v, c);
  if (const auto* v = f->get("admin")) load_admin(*v, c.admin);
  if (const auto* v = f->get("listeners")) {
    load_listeners(*v, c);
  } else {
    d_.error("listeners", {1, 1}, "at least one listener is required");
  }
  if (const auto* v = f->get("clusters")) load_clusters(*v, c);
  if (const auto* v = f->get("routes")) load_routes(*v, c);
  if (const auto* v = f->get("consumers")) load_consumers(*v, c);
  if (const auto* v = f->get("redis")) load_redis(*v, c.redis.emplace());
  if (const auto* v = f->get("filters")) load_filters(*v, c);
  if (const auto* v = f->get("access_log")) {
    if (const auto al = fields(*v, {"path"})) {
      if (const auto* p = al->get("path")) {
        if (auto s = name(*p)) c.access_log.path = std::move(*s);
      }
    }
  }
  set_duration(*f, "drain_timeout", c.drain_timeout, Duration{0});
  if (const auto* v = f->get("reload")) {
    if (const auto r =
            fields(*v, {"watch", "debounce", "max_live_generations", "generation_drain_timeout"})) {
      if (const auto* w = r->get("watch"))
        if (const auto b = boolean(*w)) c.reload.watch = *b;
      set_duration(*r, "debounce", c.reload.debounce, Duration{1}, Duration{60'000});
      load_generation_limits(*f, *r, c.reload);
    }
  } else {
    load_generation_limits(*f, std::nullopt, c.reload);
  }
  return c;
}

// max_live_generations and generation_drain_timeout: under reload:, or at the top level as a
// shorthand; not both.
void Loader::load_generation_limits(const Fields& top, const std::optional<Fields>& reload,
                                    ReloadSettings& out) {
  for (const char* key : {"max_live_generations", "generation_drain_timeout"}) {
    const Fields* where = &top;
    if (reload && reload->get(key)) {
      if (const auto* dup = top.get(key)) {
        error(*dup, "also set under reload:; set it in one place");
        continue;
      }
      where = &*reload;
    }
    if (std::string_view(key) == "max_live_generations")
      set_int(*where, key, out.max_live_generations, 2, 1024);
    else
      set_duration(*where, key, out.generation_drain_timeout, Duration{1000}, Duration{86'400'000});
  }
}

void Loader::load_workers(const Value& v, Config& c) {
  if (v.node.IsScalar() && v.node.Scalar() == "auto") {
    c.workers = 0;
    return;
  }
  const bool numeric = v.node.IsScalar() && !v.node.Scalar().empty() &&
                       std::all_of(v.node.Scalar().begin(), v.node.Scalar().end(),
                                   [](char ch) { return ch >= '0' && ch <= '9'; });
  if (!numeric) {
    error(v, "expected 'auto' or an integer between 1 and 1024, got " + describe(v.node));
    return;
  }
  if (const auto n = integer(v, 1, 1024)) c.workers = static_cast<unsigned>(*n);
}

bool Loader::listen_address(const Value& v, bool allow_port_zero, std::string& written,
                            std::string& address, std::uint16_t& port) {
  const auto s = string(v);
  if (!s) return false;
  const auto split = split_host_port(*s);
  if (const auto* reason = std::get_if<std::string>(&split)) {
    error(v, "'" + *s + "' " + *reason);
    return false;
  }
  const auto& hp = std::get<HostPort>(split);
  if (!is_ip_literal(hp.host, hp.bracketed)) {
    error(v, "'" + *s +
                 "' is not an IP address and port (e.g. '0.0.0.0:8080' or '[::]:8080'; host "
                 "names are not accepted here)");
    return false;
  }
  if (hp.port == 0 && !allow_port_zero) {
    error(v, "'" + *s + "' has a port out of range (1-65535)");
    return false;
  }
  written = *s;
  address = hp.host;
  port = hp.port;
  return true;
}

void Loader::load_admin(const Value& v, Admin& admin) {
  const auto f = fields(v, {"listen"});
  if (!f) return;
  if (const auto* l = f->get("listen")) {
    listen_address(*l, false, admin.listen, admin.address, admin.port);
  }
}

void Loader::load_listeners(const Value& v, Config& c) {
  const auto items = list(v);
  if (!items) return;
  if (items->empty()) {
    error(v, "at least one listener is required");
    return;
  }
  for (std::size_t i = 0; i < items->size(); ++i) {
    const Value& item = (*items)[i];
    Listener l;
    l.loc = item.loc;
    l.name = "listener-" + std::to_string(i);
    const auto f = fields(
        item, {"name", "listen", "limits", "tls", "protocols", "http2", "filters", "defer_accept"});
    if (!f) continue;
    if (const auto* n = f->get("name")) {
      if (auto s = name(*n)) l.name = std::move(*s);
    }
    if (const auto* a = f->get("listen")) {
      listen_address(*a, true, l.listen, l.address, l.port);
    } else {
      error(item, "missing required key 'listen'");
    }
    if (const auto* lim = f->get("limits")) load_limits(*lim, l.limits);
    if (const auto* t = f->get("tls")) load_listener_tls(*t, l.tls.emplace());
    l.h2 = l.tls.has_value();
    if (const auto* p = f->get("protocols")) load_protocols(*p, l);
    if (const auto* h = f->get("http2")) load_http2(*h, l.http2);
    if (const auto* fl = f->get("filters")) load_filter_names(*fl, l.filters);
    if (const auto* d = f->get("defer_accept")) {
      if (const auto b = boolean(*d)) l.defer_accept = *b;
    }
    c.listeners.push_back(std::move(l));
  }
}

// The files are read and checked later (tls_files.cpp), once the whole config is loaded.
void Loader::load_listener_tls(const Value& v, ListenerTls& tls) {
  const auto f = fields(v, {"certificates", "min_version", "ciphers", "client_ca",
                            "require_client_cert", "forward_client_cert", "session_tickets"});
  if (!f) return;
  if (const auto* certs = f->get("certificates")) {
    if (const auto items = list(*certs)) {
      if (items->empty()) error(*certs, "at least one certificate is required");
      for (const Value& item : *items) {
        TlsCertificate tc;
        const auto cf = fields(item, {"cert", "key"});
        if (!cf) continue;
        for (const char* key : {"cert", "key"}) {
          std::string& out = std::string_view(key) == "cert" ? tc.cert : tc.key;
          if (const auto* p = cf->get(key)) {
            if (auto str = string(*p)) out = std::move(*str);
          } else {
            error(item, std::string("missing required key '") + key + "'");
          }
        }
        tls.certificates.push_back(std::move(tc));
      }
    }
  } else {
    error(v, "missing required key 'certificates'");
  }
  if (const auto* mv = f->get("min_version")) {
    if (auto str = string(*mv)) {
      if (*str == "1.2" || *str == "1.3")
        tls.min_version = *str;
      else
        error(*mv, "expected \"1.2\" or \"1.3\", got '" + *str + "'");
    }
  }
  if (const auto* c = f->get("ciphers")) {
    if (auto str = string(*c)) tls.ciphers = std::move(*str);
  }
  if (const auto* c = f->get("client_ca")) {
    if (auto str = string(*c)) tls.client_ca = std::move(*str);
  }
  for (const char* key : {"require_client_cert", "forward_client_cert", "session_tickets"}) {
    if (const auto* b = f->get(key)) {
      if (const auto val = boolean(*b)) {
        const std::string_view k = key;
        (k == "require_client_cert"   ? tls.require_client_cert
         : k == "forward_client_cert" ? tls.forward_client_cert
                                      : tls.session_tickets) = *val;
      }
    }
  }
  if (tls.require_client_cert && tls.client_ca.empty()) {
    if (const auto* b = f->get("require_client_cert"))
      error(*b, "needs client_ca: the CA that signs the client certificates");
  }
}

void Loader::load_protocols(const Value& v, Listener& l) {
  const auto items = list(v);
  if (!items) return;
  if (items->empty()) {
    error(v, "at least one protocol is required (http1, h2, h2c)");
    return;
  }
  l.http1 = l.h2 = l.h2c = false;
  for (const Value& item : *items) {
    const auto s = string(item);
    if (!s) continue;
    bool* flag = *s == "http1" ? &l.http1 : *s == "h2" ? &l.h2 : *s == "h2c" ? &l.h2c : nullptr;
    if (!flag) {
      error(item, "unknown protocol '" + *s + "' (supported: http1, h2, h2c)" +
                      did_you_mean(*s, {"http1", "h2", "h2c"}));
      continue;
    }
    if (*flag) error(item, "protocol '" + *s + "' listed twice");
    *flag = true;
  }
  if (l.h2 && !l.tls) error(v, "h2 needs tls (HTTP/2 in cleartext is h2c)");
  if (l.h2c && l.tls) error(v, "h2c is cleartext HTTP/2; on a TLS listener use h2");
}

void Loader::load_http2(const Value& v, Http2Settings& h2) {
  const auto f =
      fields(v, {"max_concurrent_streams", "initial_window_size", "connection_window_size",
                 "max_frame_size", "header_table_size", "max_resets_burst", "max_resets_per_second",
                 "max_continuations", "max_control_frames_burst", "max_control_frames_per_second",
                 "max_empty_frames"});
  if (!f) return;
  set_int(*f, "max_concurrent_streams", h2.max_concurrent_streams, 1, 10'000);
  const auto set_size = [&](std::string_view key, std::uint32_t& out, std::uint64_t lo,
                            std::uint64_t hi) {
    if (const auto* s = f->get(key)) {
      if (const auto n = size(*s, lo, hi)) out = static_cast<std::uint32_t>(*n);
    }
  };
  set_size("initial_window_size", h2.initial_window_size, kKiB, 16 * kMiB);
  set_size("connection_window_size", h2.connection_window_size, 64 * kKiB, 1024 * kMiB);
  set_size("max_frame_size", h2.max_frame_size, 16 * kKiB, 16 * kMiB - 1);
  set_size("header_table_size", h2.header_table_size, 0, 64 * kKiB);
  set_int(*f, "max_resets_burst", h2.max_resets_burst, 1, 1'000'000);
  set_int(*f, "max_resets_per_second", h2.max_resets_per_second, 1, 1'000'000);
  set_int(*f, "max_continuations", h2.max_continuations, 0, 1'000);
  set_int(*f, "max_control_frames_burst", h2.max_control_frames_burst, 1, 1'000'000);
  set_int(*f, "max_control_frames_per_second", h2.max_control_frames_per_second, 1, 1'000'000);
  set_int(*f, "max_empty_frames", h2.max_empty_frames, 0, 1'000'000);
}

void Loader::load_limits(const Value& v, Limits& limits) {
  const auto f = fields(v, {"max_header_bytes", "max_headers", "max_uri_bytes", "max_body_bytes",
                            "header_timeout", "idle_timeout", "body_timeout", "max_connections"});
  if (!f) return;
  if (const auto* s = f->get("max_header_bytes")) {
    if (const auto n = size(*s, kKiB, kMiB)) limits.max_header_bytes = *n;
  }
  set_int(*f, "max_headers", limits.max_headers, 1, 10'000);
  if (const auto* s = f->get("max_uri_bytes")) {
    if (const auto n = size(*s, 256, kMiB)) limits.max_uri_bytes = *n;
  }
  if (const auto* s = f->get("max_body_bytes")) {
    if (s->node.IsNull() || (s->node.IsScalar() && s->node.Scalar() == "unlimited")) {
      limits.max_body_bytes.reset();
    } else if (const auto n = size(*s, 0, std::numeric_limits<std::int64_t>::max())) {
      limits.max_body_bytes = *n;
    }
  }
  set_duration(*f, "header_timeout", limits.header_timeout);
  set_duration(*f, "idle_timeout", limits.idle_timeout);
  set_duration(*f, "body_timeout", limits.body_timeout);
  set_int(*f, "max_connections", limits.max_connections, 1, 1'000'000);
}

void Loader::load_clusters(const Value& v, Config& c) {
  const auto items = list(v);
  if (!items) return;
  for (const Value& item : *items) {
    Cluster cl;
    cl.loc = item.loc;
    const auto f =
        fields(item, {"name", "endpoints", "connect_timeout", "max_idle_per_endpoint",
                      "idle_timeout", "lb_policy", "hash_on", "outlier_detection", "health_check",
                      "limits", "panic_threshold", "tls", "protocol", "http2", "discovery", "dns"});
    if (!f) continue;
    if (const auto* n = f->get("name")) {
      if (auto s = name(*n)) cl.name = std::move(*s);
    } else {
      error(item, "missing required key 'name'");
    }
    if (const auto* d = f->get("discovery")) {
      if (auto s = string(*d)) {
        if (*s == "dns") {
          cl.dns_discovery = true;
        } else if (*s != "static") {
          error(*d, "unknown discovery '" + *s + "' (supported: static, dns)" +
                        did_you_mean(*s, {"static", "dns"}));
        }
      }
    }
    if (const auto* d = f->get("dns")) {
      if (cl.dns_discovery)
        load_dns(*d, cl.dns);
      else
        error(*d, "dns settings need discovery: dns");
    }
    if (const auto* e = f->get("endpoints")) {
      if (const auto eps = list(*e)) {
        if (eps->empty()) error(*e, "a cluster needs at least one endpoint");
        // With DNS discovery, names are resolved at run time (a load never waits for DNS).
        auto& out = cl.dns_discovery ? cl.names : cl.endpoints;
        for (const Value& ep : *eps) {
          if (auto parsed = load_endpoint(ep, !cl.dns_discovery)) out.push_back(std::move(*parsed));
        }
      }
    } else {
      error(item, "missing required key 'endpoints' (a cluster needs at least one endpoint)");
    }
    set_duration(*f, "connect_timeout", cl.connect_timeout);
    set_int(*f, "max_idle_per_endpoint", cl.max_idle_per_endpoint, 0, 10'000);
    set_duration(*f, "idle_timeout", cl.idle_timeout);
    const Value* policy_value = f->get("lb_policy");
    if (policy_value != nullptr) {
      if (auto s = string(*policy_value)) {
        static const std::vector<std::string_view> kPolicies = {"round_robin", "least_request",
                                                                "random", "ring_hash", "maglev"};
        if (std::find(kPolicies.begin(), kPolicies.end(), *s) != kPolicies.end()) {
          cl.lb_policy = *s;
        } else {
          error(*policy_value,
                "unsupported lb_policy '" + *s +
                    "' (supported: round_robin, least_request, random, ring_hash, maglev)" +
                    did_you_mean(*s, kPolicies));
        }
      }
    }
    const bool hashing = cl.lb_policy == "ring_hash" || cl.lb_policy == "maglev";
    if (const auto* h = f->get("hash_on")) {
      load_hash_on(*h, cl.hash_on);
      if (!hashing && cl.hash_on.kind != HashOn::Kind::None)
        error(*h,
              "hash_on needs lb_policy ring_hash or maglev (lb_policy is '" + cl.lb_policy + "')");
    } else if (hashing) {
      error(policy_value != nullptr ? *policy_value : item,
            cl.lb_policy +
                " needs hash_on: {header: NAME}, {cookie: NAME}, {query: NAME}, client_ip or "
                "consumer");
    }
    if (const auto* o = f->get("outlier_detection"))
      load_outlier_detection(*o, cl.outlier_detection);
    set_int(*f, "panic_threshold", cl.panic_threshold, 0, 100);
    if (const auto* t = f->get("tls")) {
      ClusterTls& tls = cl.tls.emplace();
      if (const auto tf = fields(*t, {"ca", "server_name", "cert", "key", "verify"})) {
        for (auto [key, out] :
             {std::pair{"ca", &tls.ca}, std::pair{"server_name", &tls.server_name},
              std::pair{"cert", &tls.cert}, std::pair{"key", &tls.key}}) {
          if (const auto* tv = tf->get(key)) {
            if (auto str = string(*tv)) *out = std::move(*str);
          }
        }
        if (const auto* tv = tf->get("verify")) {
          if (const auto b = boolean(*tv)) tls.verify = *b;
        }
        if (tls.cert.empty() != tls.key.empty())
          error(*t, "cert and key go together (a client certificate needs its key)");
      }
    }
    if (const auto* p = f->get("protocol")) {
      if (auto s = string(*p)) {
        if (*s == "http1" || *s == "h2" || *s == "h2c") {
          cl.protocol = *s;
          if (*s == "h2" && !cl.tls)
            error(*p, "h2 needs tls (HTTP/2 in cleartext is h2c)");
          else if (*s == "h2c" && cl.tls)
            error(*p, "h2c is cleartext HTTP/2; with tls use h2");
        } else {
          error(*p, "unknown protocol '" + *s + "' (supported: http1, h2, h2c)" +
                        did_you_mean(*s, {"http1", "h2", "h2c"}));
        }
      }
    }
    if (const auto* h = f->get("http2")) {
      if (const auto hf = fields(
              *h, {"max_concurrent_streams", "initial_window_size", "connection_window_size"})) {
        set_int(*hf, "max_concurrent_streams", cl.http2.max_concurrent_streams, 1, 10'000);
        if (const auto* s = hf->get("initial_window_size")) {
          if (const auto n = size(*s, 64 * kKiB, 16 * kMiB))
            cl.http2.initial_window_size = static_cast<std::uint32_t>(*n);
        }
        if (const auto* s = hf->get("connection_window_size")) {
          if (const auto n = size(*s, 64 * kKiB, 1024 * kMiB))
            cl.http2.connection_window_size = static_cast<std::uint32_t>(*n);
        }
      }
    }
    if (const auto* l = f->get("limits")) {
      if (const auto lf = fields(
              *l, {"max_connections", "max_pending_requests", "max_requests", "max_retries"})) {
        set_int(*lf, "max_connections", cl.limits.max_connections, 1, 1'000'000);
        set_int(*lf, "max_pending_requests", cl.limits.max_pending_requests, 1, 1'000'000);
        set_int(*lf, "max_requests", cl.limits.max_requests, 1, 1'000'000);
        set_int(*lf, "max_retries", cl.limits.max_retries, 0, 1'000'000);
      }
    }
    // After protocol and tls: a gRPC check needs HTTP/2.
    if (const auto* h = f->get("health_check")) load_health_check(*h, cl, cl.health_check);
    c.clusters.push_back(std::move(cl));
  }
}

// `retry`: attempts, on, statuses, per_try_timeout, backoff {base, max}, budget {percent,
// min_concurrency}, methods.
void Loader::load_retry(const Value& v, RetryPolicy& out) {
  const auto f =
      fields(v, {"attempts", "on", "statuses", "per_try_timeout", "backoff", "budget", "methods"});
  if (!f) return;
  set_int(*f, "attempts", out.attempts, 1, 10);
  if (const auto* on = f->get("on")) {
    if (const auto items = list(*on)) {
      static const std::vector<std::string_view> kOn = {
          "connect-failure", "refused-stream", "reset", "gateway-error", "5xx", "retriable-status"};
      out.on_connect_failure = out.on_refused_stream = out.on_reset = out.on_timeout =
          out.on_gateway_error = out.on_5xx = false;
      bool retriable_status = false;
      for (const Value& item : *items) {
        const auto s = string(item);
        if (!s) continue;
        if (*s == "connect-failure") {
          out.on_connect_failure = true;
        } else if (*s == "refused-stream") {
          out.on_refused_stream = true;
        } else if (*s == "reset") {
          out.on_reset = true;
        } else if (*s == "gateway-error" || *s == "5xx") {
          out.on_connect_failure = out.on_reset = out.on_timeout = out.on_gateway_error = true;
          if (*s == "5xx") out.on_5xx = true;
        } else if (*s == "retriable-status") {
          retriable_status = true;
        } else {
          error(item, "unknown retry condition '" + *s +
                          "' (known: connect-failure, refused-stream, reset, gateway-error, "
                          "5xx, retriable-status)" +
                          did_you_mean(*s, kOn));
        }
      }
      const Value* st = f->get("statuses");
      if (retriable_status && st == nullptr) error(*on, "retriable-status needs a 'statuses' list");
      if (!retriable_status && st != nullptr)
        error(*st, "statuses apply only with 'retriable-status' in 'on'");
    }
  }
  if (const auto* st = f->get("statuses")) {
    if (const auto items = list(*st)) {
      for (const Value& item : *items) {
        if (auto n = integer(item, 100, 599)) out.statuses.push_back(static_cast<int>(*n));
      }
    }
  }
  if (f->get("per_try_timeout") != nullptr) {
    Duration d{};
    set_duration(*f, "per_try_timeout", d);
    out.per_try_timeout = d;
  }
  if (const auto* b = f->get("backoff")) {
    if (const auto bf = fields(*b, {"base", "max"})) {
      set_duration(*bf, "base", out.backoff_base, Duration{1}, Duration{10'000});
      set_duration(*bf, "max", out.backoff_max, Duration{1}, Duration{60'000});
      if (out.backoff_max < out.backoff_base) {
        const Value* where = bf->get("max");
        error(where != nullptr ? *where : *b, "must be at least base");
      }
    }
  }
  if (const auto* b = f->get("budget")) {
    if (const auto bf = fields(*b, {"percent", "min_concurrency"})) {
      set_int(*bf, "percent", out.budget_percent, 0, 100);
      set_int(*bf, "min_concurrency", out.budget_min_concurrency, 0, 1'000'000);
    }
  }
  if (const auto* m = f->get("methods")) {
    if (const auto items = list(*m)) {
      out.methods.clear();
      for (const Value& item : *items) {
        auto s = string(item);
        if (!s) continue;
        const bool token = !s->empty() && std::all_of(s->begin(), s->end(), [](char c) {
          return std::isupper(static_cast<unsigned char>(c)) || c == '-' || c == '_';
        });
        if (!token) {
          error(item, "'" + *s + "' is not an upper-case method name");
          continue;
        }
        out.methods.push_back(std::move(*s));
      }
    }
  }
}

// `health_check`: {http: {path, host, expected_statuses}} | {tcp: {}} | {grpc: {service}}, with
// interval, timeout, unhealthy_threshold and healthy_threshold.
void Loader::load_health_check(const Value& v, const Cluster& cluster, HealthCheck& out) {
  const auto f = fields(v, {"http", "tcp", "grpc", "interval", "unhealthy_interval", "timeout",
                            "unhealthy_threshold", "healthy_threshold"});
  if (!f) return;
  int kinds = 0;
  for (const char* k : {"http", "tcp", "grpc"})
    kinds += f->get(k) != nullptr ? 1 : 0;
  if (kinds != 1) {
    error(v, kinds == 0 ? "needs one of http, tcp, grpc" : "set exactly one of http, tcp, grpc");
    return;
  }
  if (const auto* h = f->get("http")) {
    out.kind = HealthCheck::Kind::Http;
    if (!h->node.IsNull()) {
      if (const auto hf = fields(*h, {"path", "host", "expected_statuses"})) {
        if (const auto* p = hf->get("path")) {
          if (auto s = string(*p)) {
            if (s->empty() || s->front() != '/' || s->find_first_of(" \r\n\t") != std::string::npos)
              error(*p, "must start with '/' and hold no spaces or control characters");
            else
              out.path = std::move(*s);
          }
        }
        if (const auto* p = hf->get("host")) {
          if (auto s = string(*p)) {
            if (s->find_first_of(" \r\n\t/") != std::string::npos)
              error(*p, "not a host name");
            else
              out.host = std::move(*s);
          }
        }
        if (const auto* e = hf->get("expected_statuses")) {
          if (const auto items = list(*e)) {
            out.expected_statuses.clear();
            if (items->empty()) error(*e, "at least one status or range");
            for (const Value& item : *items) {
              const auto s =
                  item.node.IsScalar() ? std::optional(item.node.Scalar()) : std::nullopt;
              int lo = 0;
              int hi = 0;
              char dash = 0;
              char extra = 0;
              const int n = s ? std::sscanf(s->c_str(), "%d%c%d%c", &lo, &dash, &hi, &extra) : 0;
              if (n == 1) hi = lo;
              if (!((n == 1) || (n == 3 && dash == '-')) || lo < 100 || hi > 599 || lo > hi) {
                error(item, "expected a status (200) or a range (\"200-399\") within 100-599");
                continue;
              }
              out.expected_statuses.emplace_back(lo, hi);
            }
          }
        }
      }
    }
  } else if (const auto* t = f->get("tcp")) {
    out.kind = HealthCheck::Kind::Tcp;
    if (!t->node.IsNull()) fields(*t, {});
  } else if (const auto* g = f->get("grpc")) {
    out.kind = HealthCheck::Kind::Grpc;
    if (!g->node.IsNull()) {
      if (const auto gf = fields(*g, {"service", "host"})) {
        if (const auto* p = gf->get("service")) {
          if (auto s = string(*p)) out.service = std::move(*s);
        }
        if (const auto* p = gf->get("host")) {
          if (auto s = string(*p)) out.host = std::move(*s);
        }
      }
    }
    if (cluster.protocol == "http1")
      error(*g, "a grpc health check needs the cluster's protocol to be h2c or h2 (it is http1)");
  }
  set_duration(*f, "interval", out.interval);
  if (const auto* u = f->get("unhealthy_interval")) {
    if (const auto d = duration(*u, Duration{100}, kMaxTimeout)) out.unhealthy_interval = *d;
  }
  set_duration(*f, "timeout", out.timeout);
  set_int(*f, "unhealthy_threshold", out.unhealthy_threshold, 1, 1000);
  set_int(*f, "healthy_threshold", out.healthy_threshold, 1, 1000);
  if (out.interval < Duration{100}) {
    const Value* where = f->get("interval");
    error(where != nullptr ? *where : v, "must be at least 100ms");
  }
}

// `outlier_detection`: off, or a map of its settings.
void Loader::load_outlier_detection(const Value& v, OutlierDetection& out) {
  if (v.node.IsScalar() && (v.node.Scalar() == "off" || v.node.Scalar() == "false")) {
    out.enabled = false;
    return;
  }
  const auto f = fields(v, {"consecutive_5xx", "consecutive_gateway_failures", "base_ejection_time",
                            "max_ejection_time", "max_ejection_percent"});
  if (!f) return;
  set_int(*f, "consecutive_5xx", out.consecutive_5xx, 0, 1000);
  set_int(*f, "consecutive_gateway_failures", out.consecutive_gateway_failures, 0, 1000);
  set_duration(*f, "base_ejection_time", out.base_ejection_time);
  set_duration(*f, "max_ejection_time", out.max_ejection_time);
  set_int(*f, "max_ejection_percent", out.max_ejection_percent, 0, 100);
  if (out.max_ejection_time < out.base_ejection_time) {
    const Value* where = f->get("max_ejection_time");
    error(where != nullptr ? *where : v, "must be at least base_ejection_time");
  }
}

// `hash_on`: {header: NAME} | {cookie: NAME} | {query: NAME} | client_ip | consumer.
void Loader::load_hash_on(const Value& v, HashOn& out) {
  static const std::vector<std::string_view> kScalars = {"client_ip", "consumer"};
  static const std::vector<std::string> kKeyed = {"header", "cookie", "query"};
  if (v.node.IsScalar()) {
    const auto s = string(v);
    if (!s) return;
    if (*s == "client_ip") {
      out.kind = HashOn::Kind::ClientIp;
    } else if (*s == "consumer") {
      out.kind = HashOn::Kind::Consumer;
    } else {
      error(v, "unknown hash_on '" + *s +
                   "' (expected client_ip, consumer, {header: NAME}, {cookie: NAME} or "
                   "{query: NAME})" +
                   did_you_mean(*s, kScalars));
    }
    return;
  }
  if (!v.node.IsMap()) {
    error(v,
          "expected client_ip, consumer, or one of {header: NAME}, {cookie: NAME}, "
          "{query: NAME}, got " +
              describe(v.node));
    return;
  }
  if (v.node.size() != 1) {
    error(v, "set exactly one of header, cookie, query");
    return;
  }
  const auto f = fields(v, {"header", "cookie", "query"});
  if (!f) return;
  for (const auto& key : kKeyed) {
    const Value* n = f->get(key);
    if (n == nullptr) continue;
    auto s = string(*n);
    if (!s) return;
    if (s->empty()) {
      error(*n, "must not be empty");
      return;
    }
    if (key == "header") {
      if (!is_token(*s)) {
        error(*n, "'" + *s + "' is not a valid header name");
        return;
      }
      out.kind = HashOn::Kind::Header;
      std::transform(s->begin(), s->end(), s->begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    } else {
      out.kind = key == "cookie" ? HashOn::Kind::Cookie : HashOn::Kind::Query;
    }
    out.name = std::move(*s);
  }
}

// `dns`: refresh, respect_ttl, family, resolvers.
void Loader::load_dns(const Value& v, DnsSettings& out) {
  const auto f = fields(v, {"refresh", "respect_ttl", "family", "resolvers"});
  if (!f) return;
  set_duration(*f, "refresh", out.refresh, Duration{100});
  if (const auto* r = f->get("respect_ttl")) {
    if (const auto b = boolean(*r)) out.respect_ttl = *b;
  }
  if (const auto* fam = f->get("family")) {
    if (auto s = string(*fam)) {
      if (*s == "auto") {
        out.family = DnsSettings::Family::Auto;
      } else if (*s == "v4") {
        out.family = DnsSettings::Family::V4;
      } else if (*s == "v6") {
        out.family = DnsSettings::Family::V6;
      } else {
        error(*fam, "unknown family '" + *s + "' (supported: auto, v4, v6)" +
                        did_you_mean(*s, {"auto", "v4", "v6"}));
      }
    }
  }
  if (const auto* r = f->get("resolvers")) {
    if (const auto items = list(*r)) {
      if (items->empty()) error(*r, "list at least one resolver, or leave resolvers out");
      for (const Value& item : *items) {
        const auto s = string(item);
        if (!s) continue;
        // "ip", "ip:port", "v6", "[v6]" or "[v6]:port"; the port defaults to 53.
        std::string host;
        std::uint16_t port = 53;
        bool ok = false;
        if (is_ip_literal(*s, false) || is_ip_literal(*s, true)) {
          host = *s;
          ok = true;
        } else if (s->size() > 2 && s->front() == '[' && s->back() == ']') {
          host = s->substr(1, s->size() - 2);
          ok = is_ip_literal(host, true);
        } else if (const auto split = split_host_port(*s);
                   std::holds_alternative<HostPort>(split)) {
          const auto& hp = std::get<HostPort>(split);
          host = hp.host;
          port = hp.port;
          ok = port != 0 && is_ip_literal(host, hp.bracketed);
        }
        if (!ok) {
          error(item, "'" + *s +
                          "' is not a resolver address (an IP address, with an optional port: "
                          "\"10.0.0.2\", \"127.0.0.1:5353\", \"[::1]:53\")");
          continue;
        }
        if (!out.resolvers.empty()) out.resolvers += ',';
        const bool v6 = host.find(':') != std::string::npos;
        out.resolvers += v6 ? "[" + host + "]" : host;
        out.resolvers += ':' + std::to_string(port);
      }
    }
  }
}

std::optional<Endpoint> Loader::load_endpoint(const Value& v, bool resolve) {
  Endpoint ep;
  const Value* addr = &v;
  std::optional<Fields> f;  // owns what `addr` points at
  if (v.node.IsMap()) {
    f = fields(v, {"address", "weight"});
    if (!f) return std::nullopt;
    set_int(*f, "weight", ep.weight, 1, 1'000);
    addr = f->get("address");
    if (addr == nullptr) {
      error(v, "missing required key 'address'");
      return std::nullopt;
    }
  } else if (!v.node.IsScalar()) {
    error(v,
          "expected \"host:port\" or {address: \"host:port\", weight: N}, got " + describe(v.node));
    return std::nullopt;
  }
  const auto s = string(*addr);
  if (!s) return std::nullopt;
  const auto split = split_host_port(*s);
  if (const auto* reason = std::get_if<std::string>(&split)) {
    error(*addr, "'" + *s + "' " + *reason);
    return std::nullopt;
  }
  const auto& hp = std::get<HostPort>(split);
  if (hp.port == 0) {
    error(*addr, "'" + *s + "' has a port out of range (1-65535)");
    return std::nullopt;
  }
  ep.written = *s;
  ep.port = hp.port;
  if (hp.bracketed) {
    if (!is_ip_literal(hp.host, true)) {
      error(*addr, "'" + *s + "' is not a valid IPv6 address");
      return std::nullopt;
    }
    ep.address = hp.host;
  } else if (is_ip_literal(hp.host, false)) {
    ep.address = hp.host;
  } else if (!is_host_name(hp.host)) {
    error(*addr, "'" + *s + "' is not a valid host name or IP address");
    return std::nullopt;
  } else if (resolve) {
    auto [it, fresh] = resolved_.try_emplace(hp.host);
    if (fresh) it->second = resolve_host(hp.host);
    if (it->second.address.empty()) {
      error(*addr, "cannot resolve '" + hp.host + "': " + it->second.error);
      return std::nullopt;
    }
    ep.address = it->second.address;
  }
  return ep;
}

// `request_buffering`: {max_bytes: SIZE} (`{}`: 1MiB), on/true (the same), off/false (the
// body streams, as without the key).
void Loader::load_request_buffering(const Value& v, std::optional<RequestBuffering>& out) {
  if (v.node.IsScalar()) {
    const std::string s = lower(v.node.Scalar());
    if (s == "off" || s == "false") {
      out.reset();
    } else if (s == "on" || s == "true") {
      out.emplace();
    } else {
      error(v,
            "expected a map such as {max_bytes: 1MiB}, or on/off, got '" + v.node.Scalar() + "'");
    }
    return;
  }
  const auto f = fields(v, {"max_bytes"});
  if (!f) return;
  RequestBuffering& rb = out.emplace();
  if (const auto* m = f->get("max_bytes")) {
    if (const auto n = size(*m, 1, 64 * kMiB)) rb.max_bytes = *n;
  }
}

void Loader::load_routes(const Value& v, Config& c) {
  const auto items = list(v);
  if (!items) return;
  for (std::size_t i = 0; i < items->size(); ++i) {
    Route r;
    load_route((*items)[i], i, r);
    c.routes.push_back(std::move(r));
  }
}

void Loader::load_route(const Value& v, std::size_t index, Route& r) {
  r.loc = v.loc;
  r.name = "route-" + std::to_string(index);
  const auto f = fields(
      v, {"name", "match", "backend", "backends", "rewrite", "timeout", "idle_timeout", "retry",
          "mirror", "request_buffering", "respond", "redirect", "websocket", "filters"});
  if (!f) return;
  if (const auto* rt = f->get("retry")) load_retry(*rt, r.retry.emplace());
  if (const auto* m = f->get("mirror")) {
    if (const auto mf = fields(*m, {"cluster", "percent"})) {
      Mirror& mirror = r.mirror.emplace();
      if (const auto* c = mf->get("cluster")) {
        if (auto s = string(*c)) mirror.cluster = std::move(*s);
      } else {
        error(*m, "missing required key 'cluster'");
      }
      set_int(*mf, "percent", mirror.percent, 0, 100);
    }
  }
  if (const auto* n = f->get("name")) {
    if (auto s = name(*n)) r.name = std::move(*s);
  }
  if (const auto* m = f->get("match")) load_match(*m, r.match);

  // Exactly one action. The second one written is the one reported.
  const Value* first_action = nullptr;
  std::string first_name;
  for (const std::string_view key : {"backend", "backends", "respond", "redirect"}) {
    const auto* a = f->get(key);
    if (a == nullptr) continue;
    if (first_action != nullptr) {
      error(*a, "conflicts with '" + first_name +
                    "': a route has exactly one action (backend, backends, respond or redirect)");
      continue;
    }
    first_action = a;
    first_name = key;
  }
  if (first_action == nullptr) {
    error(v, "no action: set one of backend, backends, respond or redirect");
  }

  if (const auto* b = f->get("backend")) {
    if (auto s = string(*b)) r.backends.push_back({std::move(*s), 1});
  }
  if (const auto* bs = f->get("backends")) {
    if (const auto items = list(*bs)) {
      if (items->empty()) error(*bs, "must list at least one backend");
      for (const Value& item : *items) {
        const auto bf = fields(item, {"cluster", "weight"});
        if (!bf) continue;
        WeightedBackend wb;
        if (const auto* cl = bf->get("cluster")) {
          if (auto s = string(*cl)) wb.cluster = std::move(*s);
        } else {
          error(item, "missing required key 'cluster'");
        }
        set_int(*bf, "weight", wb.weight, 1, 10'000);
        r.backends.push_back(std::move(wb));
      }
    }
  }
  if (const auto* rw = f->get("rewrite")) {
    if (const auto rf = fields(*rw, {"path_prefix", "host"})) {
      if (const auto* p = rf->get("path_prefix")) {
        if (auto s = string(*p)) {
          if (!s->starts_with('/')) {
            error(*p, "must start with '/'");
          } else if (!r.match.path_prefix && !r.match.path) {
            error(*p, "needs match.path_prefix or match.path (it replaces the matched prefix)");
          } else {
            r.rewrite.path_prefix = std::move(*s);
          }
        }
      }
      if (const auto* h = rf->get("host")) {
        if (auto s = string(*h)) {
          if (std::any_of(s->begin(), s->end(), [](char ch) {
                return static_cast<unsigned char>(ch) <= 0x20 || ch == 0x7f;
              })) {
            error(*h, "must not contain spaces or control characters");
          } else {
            r.rewrite.host = std::move(*s);
          }
        }
      }
    }
    if (first_action != nullptr && first_name != "backend" && first_name != "backends") {
      error(*rw, "rewrite applies only to routes that proxy (backend or backends)");
    }
  }
  if (const auto* rb = f->get("request_buffering")) {
    load_request_buffering(*rb, r.request_buffering);
    if (first_action != nullptr && first_name != "backend" && first_name != "backends") {
      error(*rb, "request_buffering applies only to routes that proxy (backend or backends)");
    }
  }
  set_duration(*f, "timeout", r.timeout);
  set_duration(*f, "idle_timeout", r.idle_timeout);
  if (const auto* ws = f->get("websocket")) {
    if (ws->node.IsMap()) {
      if (const auto wf = fields(*ws, {"idle_timeout"}))
        set_duration(*wf, "idle_timeout", r.websocket_idle_timeout, Duration(1'000));
    } else if (const auto b = boolean(*ws)) {
      r.websocket = *b;
    }
  }
  if (const auto* rs = f->get("respond")) load_respond(*rs, r.respond.emplace());
  if (const auto* rd = f->get("redirect")) load_redirect(*rd, r.redirect.emplace());
  if (const auto* fl = f->get("filters")) load_filter_names(*fl, r.filters);
}

std::optional<std::string> Loader::route_path(const Value& v) {
  auto s = string(v);
  if (!s) return std::nullopt;
  if (!s->starts_with('/')) {
    error(v, "must start with '/'");
    return std::nullopt;
  }
  if (s->find_first_of("?#") != std::string::npos) {
    error(v, "must not contain '?' or '#' (match query parameters with 'query')");
    return std::nullopt;
  }
  if (std::any_of(s->begin(), s->end(),
                  [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; })) {
    error(v, "must not contain spaces or control characters");
    return std::nullopt;
  }
  // Requests are matched after normalization, so these spellings could never match.
  const std::string padded = *s + "/";
  if (s->find("//") != std::string::npos || padded.find("/./") != std::string::npos ||
      padded.find("/../") != std::string::npos) {
    error(v, "'" + *s +
                 "' can never match: request paths are normalized (repeated '/' merged, '.' and "
                 "'..' segments removed) before matching");
    return std::nullopt;
  }
  return s;
}

void Loader::load_match(const Value& v, RouteMatch& m) {
  const auto f =
      fields(v, {"host", "path", "path_prefix", "path_regex", "methods", "headers", "query"});
  if (!f) return;
  if (const auto* h = f->get("host")) {
    if (auto s = string(*h)) {
      std::string host = lower(*s);
      const bool wildcard = host.starts_with("*.");
      const std::string_view rest = wildcard ? std::string_view(host).substr(2) : host;
      const bool v6 = rest.starts_with('[') && rest.ends_with(']') &&
                      is_ip_literal(std::string(rest.substr(1, rest.size() - 2)), true);
      if (rest.find('*') != std::string_view::npos) {
        error(*h, "'" + *s + "': '*' is allowed only as the whole first label ('*.example.com')");
      } else if (!v6 && rest.find(':') != std::string_view::npos) {
        error(*h, "'" + *s + "' must not include a port (the Host port is ignored for matching)");
      } else if (!v6 && !is_host_name(rest)) {
        error(*h, "'" + *s + "' is not a valid host name");
      } else {
        m.host = std::move(host);
      }
    }
  }
  const Value* path_kind = nullptr;
  std::string path_kind_name;
  for (const std::string_view key : {"path", "path_prefix", "path_regex"}) {
    const auto* p = f->get(key);
    if (p == nullptr) continue;
    if (path_kind != nullptr) {
      error(*p, "conflicts with '" + path_kind_name +
                    "': set only one of path, path_prefix, path_regex");
      continue;
    }
    path_kind = p;
    path_kind_name = key;
    if (key == "path_regex") {
      if (auto s = string(*p)) {
        RE2::Options options;
        options.set_log_errors(false);
        const RE2 re(*s, options);
        if (re.ok()) {
          m.path_regex = std::move(*s);
        } else {
          error(*p, "invalid regex '" + *s + "': " + re.error());
        }
      }
    } else if (auto s = route_path(*p)) {
      (key == "path" ? m.path : m.path_prefix) = std::move(*s);
    }
  }
  if (const auto* ms = f->get("methods")) {
    std::vector<Value> items;
    if (ms->node.IsScalar()) {
      items.push_back(*ms);
    } else if (auto l = list(*ms)) {
      items = std::move(*l);
      if (items.empty()) error(*ms, "must list at least one method (omit 'methods' to match any)");
    }
    for (const Value& item : items) {
      const auto s = string(item);
      if (!s) continue;
      if (!is_token(*s)) {
        error(item, "'" + *s + "' is not a valid HTTP method");
        continue;
      }
      auto method = upper(*s);
      if (std::find(m.methods.begin(), m.methods.end(), method) == m.methods.end()) {
        m.methods.push_back(std::move(method));
      }
    }
  }
  if (const auto* h = f->get("headers")) load_value_matches(*h, true, m.headers);
  if (const auto* q = f->get("query")) load_value_matches(*q, false, m.query);
}

void Loader::load_value_matches(const Value& v, bool header_names,
                                std::vector<std::pair<std::string, ValueMatch>>& out) {
  const auto all = entries(v, header_names);
  if (!all) return;
  for (const Entry& e : *all) {
    std::string key = e.key;
    if (header_names) {
      if (!is_token(key)) {
        d_.error(v.path, e.key_loc, "invalid header name '" + key + "'");
        continue;
      }
      key = lower(std::move(key));
    } else if (key.empty()) {
      d_.error(v.path, e.key_loc, "empty query parameter name");
      continue;
    }
    const Value& val = e.value;
    ValueMatch vm;
    if (val.node.IsScalar()) {
      const auto s = header_value(val);
      if (!s) continue;
      vm.value = *s;
    } else if (val.node.IsMap()) {
      const auto f = fields(val, {"regex", "present"});
      if (!f) continue;
      const auto* re = f->get("regex");
      const auto* present = f->get("present");
      if ((re == nullptr) == (present == nullptr)) {
        // A map of only unknown keys has been reported already.
        if (re != nullptr || val.node.size() == 0) {
          error(val, "set exactly one of 'regex' or 'present'");
        }
        continue;
      }
      if (re != nullptr) {
        const auto s = string(*re);
        if (!s) continue;
        RE2::Options options;
        options.set_log_errors(false);
        const RE2 compiled(*s, options);
        if (!compiled.ok()) {
          error(*re, "invalid regex '" + *s + "': " + compiled.error());
          continue;
        }
        vm.kind = ValueMatch::Kind::Regex;
        vm.value = *s;
      } else {
        const auto b = boolean(*present);
        if (!b) continue;
        if (!*b) {
          error(*present,
                "only 'present: true' is supported (remove the entry to not match on it)");
          continue;
        }
        vm.kind = ValueMatch::Kind::Present;
      }
    } else {
      error(val,
            "expected a string, {regex: \"...\"} or {present: true}, got " + describe(val.node));
      continue;
    }
    out.emplace_back(std::move(key), std::move(vm));
  }
}

void Loader::load_respond(const Value& v, DirectResponse& r) {
  const auto f = fields(v, {"status", "body", "content_type", "headers"});
  if (!f) return;
  set_int(*f, "status", r.status, 100, 599);
  if (const auto* b = f->get("body")) {
    if (auto s = string(*b, true)) r.body = std::move(*s);
  }
  if (const auto* ct = f->get("content_type")) {
    if (auto s = header_value(*ct)) r.content_type = std::move(*s);
  }
  if (const auto* h = f->get("headers")) {
    const auto all = entries(*h, true);
    if (!all) return;
    for (const Entry& e : *all) {
      if (!is_token(e.key)) {
        d_.error(h->path, e.key_loc, "invalid header name '" + e.key + "'");
        continue;
      }
      auto key = lower(e.key);
      if (key == "content-length" || key == "transfer-encoding" || key == "connection") {
        d_.error(h->path, e.key_loc, "'" + e.key + "' is set by Turnpike and cannot be configured");
        continue;
      }
      if (key == "content-type") {
        d_.error(h->path, e.key_loc, "set the content type with 'content_type'");
        continue;
      }
      if (auto s = header_value(e.value)) r.headers.emplace_back(std::move(key), std::move(*s));
    }
  }
}

void Loader::load_redirect(const Value& v, Redirect& r) {
  const auto f = fields(v, {"status", "location"});
  if (!f) return;
  if (const auto* s = f->get("status")) {
    if (const auto code = integer(*s, 100, 599)) {
      if (*code == 301 || *code == 302 || *code == 303 || *code == 307 || *code == 308) {
        r.status = static_cast<int>(*code);
      } else {
        error(*s, "must be one of 301, 302, 303, 307, 308, got " + std::to_string(*code));
      }
    }
  }
  if (const auto* l = f->get("location")) {
    if (auto s = header_value(*l)) {
      if (s->empty()) {
        error(*l, "must not be empty");
      } else {
        r.location = std::move(*s);
      }
    }
  } else {
    error(v, "missing required key 'location'");
  }
}

// ---- filters, consumers, redis --------------------------------------------------------------

// `filters: [a, b]` on a listener or route; the names are checked against `filters:` later.
void Loader::load_filter_names(const Value& v, std::vector<std::string>& out) {
  const auto items = list(v);
  if (!items) return;
  for (const Value& item : *items) {
    auto s = string(item);
    if (!s) continue;
    if (std::find(out.begin(), out.end(), *s) != out.end()) {
      error(item, "filter '" + *s + "' is listed twice");
      continue;
    }
    out.push_back(std::move(*s));
  }
}

bool is_hex_digest(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
         });
}

void Loader::load_consumers(const Value& v, Config& c) {
  const auto items = list(v);
  if (!items) return;
  for (const Value& item : *items) {
    Consumer consumer;
    consumer.loc = item.loc;
    const auto f = fields(item, {"name", "groups", "api_keys", "basic_auth"});
    if (!f) continue;
    if (const auto* n = f->get("name")) {
      if (auto s = name(*n)) {
        if (s->find(':') != std::string::npos)
          error(*n, "must not contain ':' (it is also the basic-auth user name)");
        else
          consumer.name = std::move(*s);
      }
    } else {
      error(item, "missing required key 'name'");
    }
    if (const auto* g = f->get("groups")) {
      if (const auto gs = list(*g)) {
        for (const Value& gv : *gs)
          if (auto s = name(gv)) consumer.groups.push_back(std::move(*s));
      }
    }
    if (const auto* k = f->get("api_keys")) {
      if (const auto ks = list(*k)) {
        for (const Value& kv : *ks) {
          const auto s = string(kv);
          if (!s) continue;
          if (s->starts_with("sha256:")) {
            const std::string hex = s->substr(7);
            if (!is_hex_digest(hex)) {
              error(kv, "a 'sha256:' key needs 64 hex digits (the SHA-256 of the key)");
              continue;
            }
            consumer.api_key_sha256.push_back(lower(hex));
          } else if (s->size() < 8) {
            error(kv, "an API key needs at least 8 characters");
          } else {
            consumer.api_key_sha256.push_back(sha256_hex(*s));
          }
        }
      }
    }
    if (const auto* b = f->get("basic_auth")) {
      if (const auto bf = fields(*b, {"password_hash"})) {
        if (const auto* h = bf->get("password_hash")) {
          if (auto s = string(*h)) {
            if (s->starts_with("$2y$") || s->starts_with("$2b$") || s->starts_with("$2a$") ||
                s->starts_with("$6$")) {
              consumer.password_hash = std::move(*s);
            } else {
              error(*h,
                    "expected a bcrypt ($2y$...) or SHA-512-crypt ($6$...) hash, e.g. from "
                    "'htpasswd -nbB user password' or 'mkpasswd -m sha-512'");
            }
          }
        } else {
          error(*b, "missing required key 'password_hash'");
        }
      }
    }
    c.consumers.push_back(std::move(consumer));
  }
}

void Loader::load_redis(const Value& v, Redis& r) {
  r.loc = v.loc;
  const auto f = fields(v, {"address", "connect_timeout", "timeout", "password", "database"});
  if (!f) return;
  if (const auto* a = f->get("address")) {
    if (const auto s = string(*a)) {
      const auto split = split_host_port(*s);
      if (const auto* reason = std::get_if<std::string>(&split)) {
        error(*a, "'" + *s + "' " + *reason);
      } else {
        const auto& hp = std::get<HostPort>(split);
        if (hp.port == 0) {
          error(*a, "'" + *s + "' has a port out of range (1-65535)");
        } else {
          std::string ip = hp.host;
          if (!is_ip_literal(hp.host, hp.bracketed)) {
            auto [it, fresh] = resolved_.try_emplace(hp.host);
            if (fresh) it->second = resolve_host(hp.host);
            ip = it->second.address;
            if (ip.empty()) error(*a, "cannot resolve '" + hp.host + "': " + it->second.error);
          }
          if (!ip.empty()) {
            r.address = *s;
            r.host = std::move(ip);
            r.port = hp.port;
          }
        }
      }
    }
  } else {
    error(v, "missing required key 'address'");
  }
  set_duration(*f, "connect_timeout", r.connect_timeout, Duration{1}, Duration{60'000});
  set_duration(*f, "timeout", r.timeout, Duration{1}, Duration{60'000});
  if (const auto* p = f->get("password")) {
    if (auto s = string(*p)) r.password = std::move(*s);
  }
  set_int(*f, "database", r.database, 0, 15);
}

nlohmann::json as_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Scalar:
      return n.Scalar();
    case YAML::NodeType::Sequence: {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& item : n)
        out.push_back(as_json(item));
      return out;
    }
    case YAML::NodeType::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (auto it = n.begin(); it != n.end(); ++it)
        out[it->first.Scalar()] = as_json(it->second);
      return out;
    }
    default:
      return nullptr;
  }
}

void Loader::load_filters(const Value& v, Config& c) {
  const auto all = entries(v);
  if (!all) return;
  const auto types = filter_type_names();
  const auto slash = d_.file().rfind('/');
  Reader reader(*this, slash == std::string::npos ? "" : d_.file().substr(0, slash));
  for (const Entry& e : *all) {
    // Kept even when its block has errors, so that references to it are not reported too.
    FilterInstance& fi = c.filters.emplace_back();
    fi.name = e.key;
    fi.loc = e.value.loc;
    if (has_control(e.key) || e.key.empty()) {
      d_.error(e.value.path, e.key_loc, "invalid filter name");
      continue;
    }
    if (!e.value.node.IsMap()) {
      std::string known;
      for (auto t : types)
        known += (known.empty() ? "" : ", ") + std::string(t);
      error(e.value,
            "expected a map with a 'type' (one of: " + known + "), got " + describe(e.value.node));
      continue;
    }
    const YAML::Node type_node = e.value.node["type"];
    if (!type_node) {
      error(e.value, "missing required key 'type'");
      continue;
    }
    const Value tv{type_node, join(e.value.path, "type"), loc_of(type_node.Mark())};
    const auto type = string(tv);
    if (!type) continue;
    const FilterParser parse = find_filter_parser(*type);
    if (parse == nullptr) {
      error(tv, "unknown filter type '" + *type + "'" + did_you_mean(*type, types));
      continue;
    }
    fi.type = *type;
    fi.settings = parse(reader, make_node(reader, e.value));
    fi.written = as_json(e.value.node).dump();
  }
}

LoadResult finish(Diagnostics& diag, Config&& config) {
  LoadResult result;
  result.errors = diag.take_errors();
  result.warnings = diag.take_warnings();
  if (result.errors.empty()) result.config = std::move(config);
  return result;
}

}  // namespace

LoadResult load_string(const std::string& yaml, const std::string& file_name) {
  Diagnostics diag(file_name);
  Config config;
  try {
    const YAML::Node root = YAML::Load(yaml);
    config = Loader(diag).load(root);
  } catch (const YAML::Exception& e) {
    diag.error("", loc_of(e.mark), "invalid YAML: " + e.msg);
    return finish(diag, std::move(config));
  }
  validate_references(config, diag);
  // A route whose match failed to load looks broader than written: only judge valid configs.
  if (!diag.has_errors()) warn_shadowed_routes(config, diag);
  config.source_file = file_name;
  // The files the config names are part of it: their content goes into the digest.
  std::string identity = yaml;
  for (const auto& [path, digest] : check_referenced_files(config, diag)) {
    config.file_digests[path] = digest;
    identity += '\0';
    identity += path;
    identity += '\0';
    identity += digest;
  }
  config.digest = sha256_hex(identity);
  return finish(diag, std::move(config));
}

LoadResult load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    LoadResult result;
    result.errors.push_back(
        {path, 0, 0, "", std::string("cannot read config file: ") + std::strerror(err), false});
    return result;
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    LoadResult result;
    result.errors.push_back({path, 0, 0, "", "cannot read config file", false});
    return result;
  }
  return load_string(text.str(), path);
}

}  // namespace turnpike::config
