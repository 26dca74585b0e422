// `type: rewrite`: changes the request before it goes upstream: the path by prefix replacement
// or by an RE2 regex with capture groups (\1..\9), the Host header, and query parameters
// (added/replaced with ${variables}, or removed). Routing has already happened (for a route's
// filters); a listener's rewrite runs before routing, so routes match the rewritten request.
#include <re2/re2.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "turnpike/filters/registry.h"
#include "turnpike/filters/template.h"

namespace turnpike::filters {
namespace {

struct QueryParam {
  std::string name;
  Template value;
};

struct Settings final : config::FilterSettings {
  std::optional<std::pair<std::string, std::string>> prefix;  // from, to
  std::unique_ptr<RE2> regex;
  std::string replacement;
  std::optional<Template> host;
  std::vector<QueryParam> query_set;
  std::vector<std::string> query_remove;
};

std::shared_ptr<const config::FilterSettings> parse(config::Reader& r, const config::Node& block) {
  const auto m = r.map(block, {"type", "path_prefix", "path_regex", "host", "query"});
  if (!m) return nullptr;
  auto s = std::make_shared<Settings>();
  if (const auto* n = m->get("path_prefix")) {
    if (const auto pm = r.map(*n, {"from", "to"})) {
      const auto* from = pm->get("from");
      const auto* to = pm->get("to");
      if (from == nullptr || to == nullptr) r.error(*n, "needs both 'from' and 'to'");
      auto f = from ? r.string(*from) : std::nullopt;
      auto t = to ? r.string(*to) : std::nullopt;
      if (f && !f->starts_with('/')) r.error(*from, "must start with '/'");
      if (t && !t->starts_with('/')) r.error(*to, "must start with '/'");
      if (f && t && f->starts_with('/') && t->starts_with('/')) s->prefix.emplace(*f, *t);
    }
  }
  if (const auto* n = m->get("path_regex")) {
    if (s->prefix) r.error(*n, "conflicts with 'path_prefix': set one of them");
    if (const auto pm = r.map(*n, {"pattern", "replace"})) {
      const auto* pattern = pm->get("pattern");
      const auto* replace = pm->get("replace");
      if (pattern == nullptr || replace == nullptr)
        r.error(*n, "needs both 'pattern' and 'replace'");
      const auto p = pattern ? r.string(*pattern) : std::nullopt;
      const auto rep = replace ? r.string(*replace) : std::nullopt;
      if (p && rep) {
        RE2::Options opts;
        opts.set_log_errors(false);
        auto re = std::make_unique<RE2>(*p, opts);
        std::string why;
        if (!re->ok()) {
          r.error(*pattern, "invalid RE2 pattern: " + re->error());
        } else if (!re->CheckRewriteString(*rep, &why)) {
          r.error(*replace, why);
        } else if (!rep->starts_with('/') && !rep->starts_with("\\")) {
          r.error(*replace, "must start with '/' (or a capture group that does)");
        } else {
          s->regex = std::move(re);
          s->replacement = *rep;
        }
      }
    }
  }
  if (const auto* n = m->get("host")) {
    if (auto h = r.header_value(*n)) {
      auto t = Template::parse(*h);
      if (auto* err = std::get_if<std::string>(&t))
        r.error(*n, *err);
      else if (h->empty() || h->find_first_of(" /") != std::string::npos)
        r.error(*n, "must be a host name (and port), without spaces or '/'");
      else
        s->host = std::get<Template>(std::move(t));
    }
  }
  if (const auto* n = m->get("query")) {
    if (const auto qm = r.map(*n, {"set", "remove"})) {
      if (const auto* set = qm->get("set")) {
        if (const auto e = r.entries(*set)) {
          for (const auto& [name, value] : e->entries()) {
            const auto v = r.string(value, true);
            if (!v) continue;
            auto t = Template::parse(*v);
            if (auto* err = std::get_if<std::string>(&t))
              r.error(value, *err);
            else
              s->query_set.push_back({name, std::get<Template>(std::move(t))});
          }
        }
      }
      if (const auto* rm = qm->get("remove")) {
        if (auto names = r.strings(*rm)) s->query_remove = std::move(*names);
      }
    }
  }
  if (m->entries().size() <= 1)  // only `type`
    r.error(block, "set at least one of path_prefix, path_regex, host, query");
  return s;
}

// Percent-encodes a query component (RFC 3986 unreserved characters stay as they are).
void append_encoded(std::string& out, std::string_view v) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (unsigned char c : v) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
}

// The parameter's name as written (before '='), undecoded: configured names are plain.
std::string_view param_name(std::string_view param) {
  return param.substr(0, param.find('='));
}

class RewriteFilter final : public Filter {
 public:
  explicit RewriteFilter(const Settings& s) : s_(s) {}
  Status on_request_headers(http::RequestHead& req, StreamCallbacks& cb) override {
    const RequestContext& ctx = cb.context();
    if (s_.prefix) {
      const auto& [from, to] = *s_.prefix;
      // Segment boundary: "/api" rewrites "/api" and "/api/x", not "/apix".
      if (req.path.starts_with(from) &&
          (req.path.size() == from.size() || from.ends_with('/') || req.path[from.size()] == '/')) {
        const std::string_view rest = std::string_view(req.path).substr(from.size());
        std::string_view head = to;
        if (head.ends_with('/') && rest.starts_with('/')) head.remove_suffix(1);
        std::string out;
        out.reserve(head.size() + rest.size() + 1);
        out.append(head);
        if (!head.ends_with('/') && !rest.empty() && !rest.starts_with('/')) out.push_back('/');
        out.append(rest);
        if (out.empty()) out.push_back('/');
        req.path = std::move(out);
      }
    } else if (s_.regex) {
      std::string out;
      if (RE2::Extract(req.path, *s_.regex, s_.replacement, &out) && out.starts_with('/') &&
          RE2::FullMatch(req.path, *s_.regex))
        req.path = std::move(out);
    }
    if (s_.host) req.headers.set("Host", s_.host->render(ctx, req));
    if (!s_.query_set.empty() || !s_.query_remove.empty()) rewrite_query(req, ctx);
    return Status::Continue;
  }

 private:
  void rewrite_query(http::RequestHead& req, const RequestContext& ctx) const {
    std::string out;
    std::string_view rest = req.query;
    while (!rest.empty()) {
      const auto amp = rest.find('&');
      const std::string_view param = rest.substr(0, amp);
      rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
      const std::string_view name = param_name(param);
      const bool drop = std::find(s_.query_remove.begin(), s_.query_remove.end(), name) !=
                            s_.query_remove.end() ||
                        std::any_of(s_.query_set.begin(), s_.query_set.end(),
                                    [&](const QueryParam& q) { return q.name == name; });
      if (drop || param.empty()) continue;
      if (!out.empty()) out += '&';
      out += param;
    }
    for (const auto& q : s_.query_set) {
      if (!out.empty()) out += '&';
      append_encoded(out, q.name);
      out += '=';
      append_encoded(out, q.value.render(ctx, req));
    }
    req.query = std::move(out);
  }

  const Settings& s_;
};

}  // namespace

void register_rewrite() {
  register_filter_type({"rewrite", parse, build_with<RewriteFilter, Settings>});
}

}  // namespace turnpike::filters
