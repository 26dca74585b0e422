#include "turnpike/router/route_table.h"

#include <re2/re2.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "turnpike/http/path.h"

namespace turnpike::router {
namespace {

using config::ValueMatch;

enum class HostKind : std::uint8_t { Any, Exact, Suffix };
enum class Failed : std::uint8_t { None, Host, Path, Method, Header, Query };

struct Failure {
  Failed what = Failed::None;
  std::uint32_t item = 0;  // index into headers / query
};

struct CompiledValue {
  std::string name;
  ValueMatch::Kind kind = ValueMatch::Kind::Exact;
  std::string value;
  std::unique_ptr<RE2> re;
};

struct CompiledRoute {
  HostKind host_kind = HostKind::Any;
  std::string host;  // exact name, or the suffix ".example.com" of "*.example.com"
  // A route may (if config allows it) set more than one of path / path_prefix / path_regex;
  // every one that is set must match.
  std::optional<std::string_view> path_exact;  // views into the config, inline for the scan
  std::optional<std::string_view> path_prefix;
  std::unique_ptr<RE2> path_re;
  // Every path the regex can fully match lies in [re_min, re_max]: a string compare rejects
  // most paths before paying for an RE2 call.
  bool has_re_range = false;
  std::string re_min;
  std::string re_max;
  const std::vector<std::string>* methods = nullptr;
  std::vector<CompiledValue> headers;
  std::vector<CompiledValue> query;
};

std::unique_ptr<RE2> compile_regex(const std::string& pattern, const std::string& route,
                                   const char* what) {
  RE2::Options options;
  options.set_log_errors(false);
  auto re = std::make_unique<RE2>(pattern, options);
  if (!re->ok()) {
    throw std::invalid_argument("route \"" + route + "\": invalid " + what + " regex \"" + pattern +
                                "\": " + re->error());
  }
  return re;
}

std::string lower_ascii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + ('a' - 'A'));
  }
  return out;
}

bool full_match(std::string_view text, const RE2& re) noexcept {
  return RE2::FullMatch(re2::StringPiece(text.data(), text.size()), re);
}

bool host_matches(const CompiledRoute& r, std::string_view host) noexcept {
  switch (r.host_kind) {
    case HostKind::Any:
      return true;
    // The request host is already lower-cased (http::normalize_host), and so is r.host.
    case HostKind::Exact:
      return host == r.host;
    case HostKind::Suffix:
      // At least one label before the suffix: "*.example.com" never matches "example.com"
      // nor ".example.com".
      return host.size() > r.host.size() && host.ends_with(r.host);
  }
  return false;
}

bool under_prefix(std::string_view path, std::string_view prefix) noexcept {
  if (!path.starts_with(prefix)) return false;
  return path.size() == prefix.size() || prefix.back() == '/' || path[prefix.size()] == '/';
}

bool path_literal_matches(const CompiledRoute& r, std::string_view path) noexcept {
  if (r.path_exact && path != *r.path_exact) return false;
  if (r.path_prefix && !under_prefix(path, *r.path_prefix)) return false;
  return true;
}

bool path_regex_matches(const CompiledRoute& r, std::string_view path) noexcept {
  if (!r.path_re) return true;
  if (r.has_re_range && (path < r.re_min || path > r.re_max)) return false;
  return full_match(path, *r.path_re);
}

bool path_matches(const CompiledRoute& r, std::string_view path) noexcept {
  return path_literal_matches(r, path) && path_regex_matches(r, path);
}

bool method_matches(const CompiledRoute& r, std::string_view method) noexcept {
  if (r.methods->empty()) return true;
  return std::any_of(r.methods->begin(), r.methods->end(),
                     [method](const std::string& m) { return m == method; });
}

bool value_matches(const CompiledValue& v, std::string_view value) noexcept {
  switch (v.kind) {
    case ValueMatch::Kind::Present:
      return true;
    case ValueMatch::Kind::Exact:
      return value == v.value;
    case ValueMatch::Kind::Regex:
      return full_match(value, *v.re);
  }
  return false;
}

// A header repeated in the request matches when any of its values does.
bool header_matches(const CompiledValue& v, const http::HeaderMap* headers) noexcept {
  if (headers == nullptr) return false;
  for (const auto& e : *headers) {
    if (http::iequals(e.name, v.name) && value_matches(v, e.value)) return true;
  }
  return false;
}

bool query_matches(const CompiledValue& v, std::string_view query) noexcept {
  const auto raw = http::find_query_param(query, v.name);
  if (!raw) return false;
  switch (v.kind) {
    case ValueMatch::Kind::Present:
      return true;
    case ValueMatch::Kind::Exact:
      return http::query_component_equals(*raw, v.value);
    case ValueMatch::Kind::Regex: {
      if (raw->find_first_of("%+") == std::string_view::npos) return full_match(*raw, *v.re);
      // Decode on the stack; a longer value than this is rare enough to pay for a heap copy.
      char buf[1024];
      if (raw->size() <= sizeof(buf)) {
        const auto n = http::decode_query_component(*raw, buf);
        return full_match(std::string_view(buf, n), *v.re);
      }
      std::string decoded(raw->size(), '\0');
      decoded.resize(http::decode_query_component(*raw, decoded.data()));
      return full_match(decoded, *v.re);
    }
  }
  return false;
}

// The hot path: every condition must hold, so test the cheap and selective ones first (a
// path prefix rejects most routes with one memcmp) and the regexes last.
bool matches(const CompiledRoute& r, const RequestView& req) noexcept {
  if (!path_literal_matches(r, req.path)) return false;
  if (!host_matches(r, req.host)) return false;
  if (!method_matches(r, req.method)) return false;
  for (const auto& h : r.headers) {
    if (!header_matches(h, req.headers)) return false;
  }
  for (const auto& q : r.query) {
    if (!query_matches(q, req.query)) return false;
  }
  return path_regex_matches(r, req.path);
}

// The first condition of `r` that `req` fails, in the documented order.
Failure check(const CompiledRoute& r, const RequestView& req) noexcept {
  if (!host_matches(r, req.host)) return {Failed::Host, 0};
  if (!path_matches(r, req.path)) return {Failed::Path, 0};
  if (!method_matches(r, req.method)) return {Failed::Method, 0};
  for (std::uint32_t i = 0; i < r.headers.size(); ++i) {
    if (!header_matches(r.headers[i], req.headers)) return {Failed::Header, i};
  }
  for (std::uint32_t i = 0; i < r.query.size(); ++i) {
    if (!query_matches(r.query[i], req.query)) return {Failed::Query, i};
  }
  return {};
}

std::string json_quote(std::string_view s) {
  return nlohmann::json(std::string(s)).dump();
}

std::string describe_value_miss(std::string_view what, const CompiledValue& v,
                                const std::string* actual) {
  std::string out = std::string(what) + " " + v.name + ": ";
  if (actual == nullptr) return out + "missing";
  out += json_quote(*actual);
  if (v.kind == ValueMatch::Kind::Regex)
    return out + " does not match regex " + json_quote(v.value);
  return out + " does not equal " + json_quote(v.value);
}

std::string describe(const CompiledRoute& r, const config::Route& cfg, Failure f,
                     const RequestView& req) {
  switch (f.what) {
    case Failed::None:
      return {};
    case Failed::Host:
      return "host: " + json_quote(req.host) + " does not match " + json_quote(*cfg.match.host);
    case Failed::Path:
      if (r.path_exact && req.path != *r.path_exact) {
        return "path: " + json_quote(req.path) + " does not equal " + json_quote(*r.path_exact);
      }
      if (r.path_prefix && !under_prefix(req.path, *r.path_prefix)) {
        return "path: " + json_quote(req.path) + " is not under prefix " +
               json_quote(*r.path_prefix);
      }
      return "path: " + json_quote(req.path) + " does not match regex " +
             json_quote(*cfg.match.path_regex);
    case Failed::Method: {
      std::string out = "method: " + std::string(req.method) + " not in [";
      for (std::size_t i = 0; i < r.methods->size(); ++i) {
        if (i) out += ", ";
        out += (*r.methods)[i];
      }
      return out + "]";
    }
    case Failed::Header: {
      const auto& v = r.headers[f.item];
      const std::string* actual = req.headers ? req.headers->get(v.name) : nullptr;
      return describe_value_miss("header", v, actual);
    }
    case Failed::Query: {
      const auto& v = r.query[f.item];
      const auto actual = http::query_param(req.query, v.name);
      return describe_value_miss("query", v, actual ? &*actual : nullptr);
    }
  }
  return {};
}

CompiledValue compile_value(const std::pair<std::string, ValueMatch>& m, bool lower_name,
                            const config::Route& route, const char* what) {
  CompiledValue v;
  v.name = lower_name ? lower_ascii(m.first) : m.first;
  v.kind = m.second.kind;
  v.value = m.second.value;
  if (v.kind == ValueMatch::Kind::Regex) v.re = compile_regex(v.value, route.name, what);
  return v;
}

const char* action_name(ActionKind kind) {
  switch (kind) {
    case ActionKind::Proxy:
      return "proxy";
    case ActionKind::Redirect:
      return "redirect";
    case ActionKind::Respond:
      return "respond";
  }
  return "proxy";
}

}  // namespace

struct RouteTable::Compiled {
  std::vector<CompiledRoute> routes;
};

std::uint32_t Route::pick_cluster(std::uint32_t random) const noexcept {
  if (backends.empty()) return 0;
  if (total_weight == 0) return backends.front().cluster_index;
  if (random >= total_weight) random %= total_weight;
  for (const auto& b : backends) {
    if (random < b.cumulative_weight) return b.cluster_index;
  }
  return backends.back().cluster_index;
}

std::string Route::rewritten_path(std::string_view path) const {
  const auto& match = config->match;
  const auto& rewrite = config->rewrite.path_prefix;
  if (!rewrite) return std::string(path);
  if (match.path_prefix && path.starts_with(*match.path_prefix)) {
    std::string_view prefix = *match.path_prefix;
    std::string_view replacement = *rewrite;
    // Keep exactly one '/' at the seam: prefix "/api/" rewritten to "/v1" maps "/api/x" to
    // "/v1/x" (not "/v1x"), and prefix "/api" rewritten to "/" maps "/api/x" to "/x".
    if (prefix.ends_with('/') && !replacement.ends_with('/')) prefix.remove_suffix(1);
    std::string_view rest = path.substr(prefix.size());
    if (replacement.ends_with('/') && rest.starts_with('/')) rest.remove_prefix(1);
    std::string out;
    out.reserve(replacement.size() + rest.size() + 1);
    out.append(replacement).append(rest);
    if (out.empty()) out = "/";
    return out;
  }
  if (match.path) return *rewrite;
  return std::string(path);  // a regex-only route has no prefix to replace
}

RouteTable::RouteTable(const config::Config& config) : compiled_(std::make_unique<Compiled>()) {
  routes_.reserve(config.routes.size());
  compiled_->routes.reserve(config.routes.size());
  for (std::size_t i = 0; i < config.routes.size(); ++i) {
    const auto& cfg = config.routes[i];
    Route route;
    route.index = static_cast<std::uint32_t>(i);
    route.config = &cfg;
    if (cfg.respond) {
      route.action = ActionKind::Respond;
    } else if (cfg.redirect) {
      route.action = ActionKind::Redirect;
    } else {
      route.action = ActionKind::Proxy;
      if (cfg.backends.empty()) {
        throw std::invalid_argument("route \"" + cfg.name + "\": no backend");
      }
      for (const auto& b : cfg.backends) {
        const auto it =
            std::find_if(config.clusters.begin(), config.clusters.end(),
                         [&b](const config::Cluster& c) { return c.name == b.cluster; });
        if (it == config.clusters.end()) {
          throw std::invalid_argument("route \"" + cfg.name + "\": unknown cluster \"" + b.cluster +
                                      "\"");
        }
        route.total_weight += b.weight;
        route.backends.push_back(
            {static_cast<std::uint32_t>(it - config.clusters.begin()), route.total_weight});
      }
      if (cfg.mirror) {
        const auto it = std::find_if(
            config.clusters.begin(), config.clusters.end(),
            [&cfg](const config::Cluster& c) { return c.name == cfg.mirror->cluster; });
        if (it == config.clusters.end())
          throw std::invalid_argument("route \"" + cfg.name + "\": unknown mirror cluster \"" +
                                      cfg.mirror->cluster + "\"");
        route.mirror_cluster = it - config.clusters.begin();
      }
    }

    CompiledRoute c;
    const auto& m = cfg.match;
    if (m.host && !m.host->empty() && *m.host != "*") {
      std::string host = lower_ascii(*m.host);
      if (host.ends_with('.')) host.pop_back();
      if (host.starts_with("*.")) {
        c.host_kind = HostKind::Suffix;
        c.host = host.substr(1);
      } else {
        c.host_kind = HostKind::Exact;
        c.host = std::move(host);
      }
    }
    if (m.path) c.path_exact = *m.path;
    if (m.path_prefix) c.path_prefix = *m.path_prefix;
    if (m.path_regex) {
      c.path_re = compile_regex(*m.path_regex, cfg.name, "path");
      c.has_re_range = c.path_re->PossibleMatchRange(&c.re_min, &c.re_max, 64);
    }
    c.methods = &m.methods;
    for (const auto& h : m.headers)
      c.headers.push_back(compile_value(h, true, cfg, "header"));
    for (const auto& q : m.query)
      c.query.push_back(compile_value(q, false, cfg, "query"));

    routes_.push_back(std::move(route));
    compiled_->routes.push_back(std::move(c));
  }
}

RouteTable::~RouteTable() = default;
RouteTable::RouteTable(RouteTable&&) noexcept = default;
RouteTable& RouteTable::operator=(RouteTable&&) noexcept = default;

const Route* RouteTable::match(const RequestView& req) const noexcept {
  const auto& compiled = compiled_->routes;
  for (std::size_t i = 0; i < compiled.size(); ++i) {
    if (matches(compiled[i], req)) return &routes_[i];
  }
  return nullptr;
}

Explanation RouteTable::explain(const RequestView& req) const {
  Explanation out;
  const auto& compiled = compiled_->routes;
  for (std::size_t i = 0; i < compiled.size(); ++i) {
    const Failure f = check(compiled[i], req);
    if (f.what == Failed::None) {
      out.matched = &routes_[i];
      break;
    }
    out.misses.push_back(Explanation::Miss{routes_[i].name(),
                                           describe(compiled[i], *routes_[i].config, f, req),
                                           static_cast<std::uint32_t>(i)});
  }
  return out;
}

nlohmann::json Explanation::to_json(const RequestView& req) const {
  nlohmann::json j;
  j["request"] = {
      {"method", req.method}, {"host", req.host}, {"path", req.path}, {"query", req.query}};
  if (matched == nullptr) {
    j["matched"] = nullptr;
  } else {
    const auto& cfg = *matched->config;
    nlohmann::json m;
    m["route"] = cfg.name;
    m["index"] = matched->index;
    m["action"] = action_name(matched->action);
    auto clusters = nlohmann::json::array();
    if (matched->action == ActionKind::Proxy) {
      for (const auto& b : cfg.backends) {
        clusters.push_back({{"cluster", b.cluster}, {"weight", b.weight}});
      }
    }
    m["clusters"] = std::move(clusters);
    m["rewrite"] = {{"path", matched->rewritten_path(req.path)},
                    {"host", cfg.rewrite.host ? nlohmann::json(*cfg.rewrite.host) : nullptr}};
    if (cfg.redirect) {
      m["redirect"] = {{"status", cfg.redirect->status}, {"location", cfg.redirect->location}};
    }
    if (cfg.respond) m["respond"] = {{"status", cfg.respond->status}};
    j["matched"] = std::move(m);
  }
  auto misses_json = nlohmann::json::array();
  for (const auto& miss : misses) {
    misses_json.push_back({{"route", miss.route}, {"index", miss.index}, {"reason", miss.reason}});
  }
  j["not_matched"] = std::move(misses_json);
  return j;
}

nlohmann::json RouteTable::explain(std::string_view method, std::string_view authority,
                                   std::string_view target,
                                   const std::vector<std::pair<std::string, std::string>>& headers,
                                   std::string& error) const {
  auto split = http::normalize_target(target);
  if (!split) {
    error = "invalid path '" + std::string(target) + "'";
    return nullptr;
  }
  http::HeaderMap hm;
  for (const auto& [k, v] : headers)
    hm.add(k, v);
  const std::string host = http::normalize_host(authority);
  const RequestView view{method, host, split->path, split->query, &hm};
  return explain(view).to_json(view);
}

}  // namespace turnpike::router
