// `type: cors`: Cross-Origin Resource Sharing. Answers preflight requests (OPTIONS with Origin
// and Access-Control-Request-Method) itself and adds the CORS response headers to responses
// for allowed origins, including Turnpike's own error answers, so a browser app can read a 401
// or 429. A request from an origin not allowed goes on without CORS headers (the browser then
// withholds the response from the page); a preflight from one gets 403.
#include <algorithm>
#include <string>
#include <vector>

#include "turnpike/filters/registry.h"

namespace turnpike::filters {
namespace {

struct Origin {
  std::string scheme_and_prefix;  // "https://" for a wildcard, else the whole origin
  std::string suffix;             // ".example.com" for "https://*.example.com"
  bool wildcard = false;
};

struct Settings final : config::FilterSettings {
  bool any_origin = false;  // "*"
  std::vector<Origin> origins;
  std::vector<std::string> methods{"GET", "HEAD", "POST"};
  std::string methods_joined;
  std::vector<std::string> headers;  // lower-case; "*" reflects what the preflight asks for
  bool any_header = false;
  std::string headers_joined;
  std::string expose_joined;
  bool credentials = false;
  std::string max_age = "600";

  bool allowed(std::string_view origin) const {
    if (any_origin) return true;
    return std::any_of(origins.begin(), origins.end(), [&](const Origin& o) {
      if (!o.wildcard) return origin == o.scheme_and_prefix;
      // "https://*.example.com" matches "https://a.example.com" and "https://a.b.example.com"
      // but not "https://example.com" or "https://evil-example.com".
      return origin.size() > o.scheme_and_prefix.size() + o.suffix.size() &&
             origin.starts_with(o.scheme_and_prefix) && origin.ends_with(o.suffix) &&
             origin.substr(o.scheme_and_prefix.size(),
                           origin.size() - o.scheme_and_prefix.size() - o.suffix.size())
                     .find_first_of("/:@") == std::string_view::npos;
    });
  }
};

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v)
    out += (out.empty() ? "" : ", ") + s;
  return out;
}

std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

std::shared_ptr<const config::FilterSettings> parse(config::Reader& r, const config::Node& block) {
  const auto m = r.map(block, {"type", "allow_origins", "allow_methods", "allow_headers",
                               "expose_headers", "allow_credentials", "max_age"});
  if (!m) return nullptr;
  auto s = std::make_shared<Settings>();
  if (const auto* n = m->get("allow_origins")) {
    if (const auto items = r.list(*n)) {
      for (const auto& item : *items) {
        auto o = r.string(item);
        if (!o) continue;
        if (*o == "*") {
          s->any_origin = true;
          continue;
        }
        const auto scheme_end = o->find("://");
        if (scheme_end == std::string::npos || o->ends_with("/") ||
            o->find_first_of(" \t\r\n") != std::string::npos) {
          r.error(item, "'" + *o +
                            "' is not an origin (scheme://host[:port], e.g. "
                            "'https://app.example.com' or 'https://*.example.com')");
          continue;
        }
        Origin origin;
        const std::string host = o->substr(scheme_end + 3);
        if (host.starts_with("*.")) {
          origin.wildcard = true;
          origin.scheme_and_prefix = lower(o->substr(0, scheme_end + 3));
          origin.suffix = lower(host.substr(1));
        } else if (host.find('*') != std::string::npos) {
          r.error(item, "a wildcard is only allowed as the first label ('https://*.example.com')");
          continue;
        } else {
          origin.scheme_and_prefix = lower(*o);
        }
        s->origins.push_back(std::move(origin));
      }
    }
  } else {
    r.error(block, "missing required key 'allow_origins'");
  }
  if (const auto* n = m->get("allow_methods")) {
    if (auto v = r.strings(*n)) {
      for (auto& method : *v)
        for (char& c : method)
          if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
      s->methods = std::move(*v);
    }
  }
  if (const auto* n = m->get("allow_headers")) {
    if (const auto items = r.list(*n)) {
      for (const auto& item : *items) {
        if (item.is_scalar() && r.string(item) == "*") {
          s->any_header = true;
          continue;
        }
        if (auto h = r.header_name(item)) s->headers.push_back(std::move(*h));
      }
    }
  }
  if (const auto* n = m->get("expose_headers")) {
    if (const auto items = r.list(*n)) {
      std::vector<std::string> expose;
      for (const auto& item : *items)
        if (auto h = r.header_name(item)) expose.push_back(std::move(*h));
      s->expose_joined = join(expose);
    }
  }
  if (const auto* n = m->get("allow_credentials")) {
    if (const auto b = r.boolean(*n)) s->credentials = *b;
    if (s->credentials && s->any_origin)
      r.error(*n,
              "allow_credentials cannot be used with allow_origins: ['*'] (browsers refuse it)");
  }
  if (const auto* n = m->get("max_age")) {
    if (const auto d = r.duration(*n, config::Duration{0}, std::chrono::hours(24)))
      s->max_age = std::to_string(d->count() / 1000);
  }
  s->methods_joined = join(s->methods);
  s->headers_joined = join(s->headers);
  return s;
}

class CorsFilter final : public Filter {
 public:
  explicit CorsFilter(const Settings& s) : s_(s) {}

  Status on_request_headers(http::RequestHead& req, StreamCallbacks& cb) override {
    const std::string* origin = req.headers.get("origin");
    if (origin == nullptr) return Status::Continue;
    const std::string* method = req.headers.get("access-control-request-method");
    const bool preflight = req.method == "OPTIONS" && method != nullptr;
    const bool allowed = s_.allowed(lower(*origin));
    if (!preflight) {
      if (allowed) origin_ = *origin;
      return Status::Continue;
    }
    if (!allowed) {
      cb.send_local_reply({403, "origin not allowed", {{"Vary", "Origin"}}});
      return Status::Stop;
    }
    if (std::find(s_.methods.begin(), s_.methods.end(), *method) == s_.methods.end()) {
      cb.send_local_reply({403, "method not allowed by the CORS policy", {{"Vary", "Origin"}}});
      return Status::Stop;
    }
    LocalReply reply{204, {}, {}};
    reply.headers.emplace_back("Access-Control-Allow-Origin", allow_origin(*origin));
    reply.headers.emplace_back("Access-Control-Allow-Methods", s_.methods_joined);
    const std::string* asked = req.headers.get("access-control-request-headers");
    if (s_.any_header && asked != nullptr) {
      reply.headers.emplace_back("Access-Control-Allow-Headers", *asked);
    } else if (asked != nullptr) {
      // Every header the browser asks for must be allowed, or it gives up: say so here.
      std::string_view rest = *asked;
      while (!rest.empty()) {
        const auto comma = rest.find(',');
        std::string name(rest.substr(0, comma));
        std::erase_if(name, [](char c) { return c == ' ' || c == '\t'; });
        rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
        if (!name.empty() &&
            std::find(s_.headers.begin(), s_.headers.end(), lower(name)) == s_.headers.end()) {
          cb.send_local_reply(
              {403, "header '" + name + "' not allowed by the CORS policy", {{"Vary", "Origin"}}});
          return Status::Stop;
        }
      }
      if (!s_.headers_joined.empty())
        reply.headers.emplace_back("Access-Control-Allow-Headers", s_.headers_joined);
    }
    if (s_.credentials) reply.headers.emplace_back("Access-Control-Allow-Credentials", "true");
    reply.headers.emplace_back("Access-Control-Max-Age", s_.max_age);
    reply.headers.emplace_back("Vary", "Origin");
    cb.send_local_reply(std::move(reply));
    return Status::Stop;
  }

  Status on_response_headers(http::ResponseHead& resp, StreamCallbacks&) override {
    if (origin_.empty()) return Status::Continue;
    resp.headers.set("Access-Control-Allow-Origin", allow_origin(origin_));
    if (s_.credentials) resp.headers.set("Access-Control-Allow-Credentials", "true");
    if (!s_.expose_joined.empty())
      resp.headers.set("Access-Control-Expose-Headers", s_.expose_joined);
    resp.headers.add("Vary", "Origin");
    return Status::Continue;
  }

 private:
  std::string allow_origin(const std::string& origin) const {
    return s_.any_origin && !s_.credentials ? std::string("*") : origin;
  }

  const Settings& s_;
  std::string origin_;  // an allowed origin of an actual (not preflight) request
};

}  // namespace

void register_cors() {
  register_filter_type({"cors", parse, build_with<CorsFilter, Settings>});
}

}  // namespace turnpike::filters
