// Shadowed routes: route B can never match when an earlier route A matches every request B
// would. Each test below errs towards "not covered": a warning must always be true.
#include <re2/re2.h>

#include <algorithm>
#include <memory>
#include <unordered_map>

#include "config/validate.h"

namespace turnpike::config {
namespace {

class RegexCache {
 public:
  /// Whether `text` fully matches `pattern`; false when the pattern does not compile.
  bool full_match(const std::string& pattern, const std::string& text) {
    auto& re = cache_[pattern];
    if (!re) {
      RE2::Options options;
      options.set_log_errors(false);
      re = std::make_unique<RE2>(pattern, options);
    }
    return re->ok() && RE2::FullMatch(text, *re);
  }

 private:
  std::unordered_map<std::string, std::unique_ptr<RE2>> cache_;
};

// The router's rule: "/api" covers "/api" and "/api/x", never "/apix".
bool under_prefix(std::string_view path, std::string_view prefix) {
  if (!path.starts_with(prefix)) return false;
  return path.size() == prefix.size() || prefix.back() == '/' || path[prefix.size()] == '/';
}

bool host_covers(const RouteMatch& a, const RouteMatch& b) {
  if (!a.host) return true;
  if (!b.host) return false;
  if (*a.host == *b.host) return true;
  if (!a.host->starts_with("*.")) return false;
  // "*.example.com" covers "x.example.com" and "*.x.example.com": both end in ".example.com"
  // with at least one label before it.
  const std::string_view suffix = std::string_view(*a.host).substr(1);
  std::string_view bh = *b.host;
  if (bh.starts_with("*.")) bh.remove_prefix(1);
  return bh.size() > suffix.size() && bh.ends_with(suffix);
}

bool path_covers(const RouteMatch& a, const RouteMatch& b, RegexCache& regexes) {
  if (a.path_prefix) {
    if (*a.path_prefix == "/") return true;  // every normalized path starts with '/'
    if (b.path) return under_prefix(*b.path, *a.path_prefix);
    if (b.path_prefix) return under_prefix(*b.path_prefix, *a.path_prefix);
    return false;
  }
  if (a.path) return b.path && *b.path == *a.path;
  if (a.path_regex) {
    if (b.path_regex) return *b.path_regex == *a.path_regex;
    if (b.path) return regexes.full_match(*a.path_regex, *b.path);
    return false;
  }
  return true;
}

bool methods_cover(const RouteMatch& a, const RouteMatch& b) {
  if (a.methods.empty()) return true;
  if (b.methods.empty()) return false;
  return std::all_of(b.methods.begin(), b.methods.end(), [&](const std::string& m) {
    return std::find(a.methods.begin(), a.methods.end(), m) != a.methods.end();
  });
}

using ValueMatches = std::vector<std::pair<std::string, ValueMatch>>;

// Every condition of `a` is implied by one of `b`'s on the same name: the same condition,
// presence implied by any condition, or an exact value that a's regex accepts.
bool values_cover(const ValueMatches& a, const ValueMatches& b, RegexCache& regexes) {
  return std::all_of(a.begin(), a.end(), [&](const auto& ac) {
    return std::any_of(b.begin(), b.end(), [&](const auto& bc) {
      if (bc.first != ac.first) return false;
      const ValueMatch& av = ac.second;
      const ValueMatch& bv = bc.second;
      if (av.kind == ValueMatch::Kind::Present) return true;
      if (av.kind == bv.kind && av.value == bv.value) return true;
      return av.kind == ValueMatch::Kind::Regex && bv.kind == ValueMatch::Kind::Exact &&
             regexes.full_match(av.value, bv.value);
    });
  });
}

bool covers(const RouteMatch& a, const RouteMatch& b, RegexCache& regexes) {
  return host_covers(a, b) && path_covers(a, b, regexes) && methods_cover(a, b) &&
         values_cover(a.headers, b.headers, regexes) && values_cover(a.query, b.query, regexes);
}

}  // namespace

void warn_shadowed_routes(const Config& config, Diagnostics& diag) {
  RegexCache regexes;
  for (std::size_t j = 1; j < config.routes.size(); ++j) {
    const auto& later = config.routes[j];
    for (std::size_t i = 0; i < j; ++i) {
      const auto& earlier = config.routes[i];
      if (!covers(earlier.match, later.match, regexes)) continue;
      diag.warning("routes[" + std::to_string(j) + "]", later.loc,
                   "route '" + later.name + "' can never match: route '" + earlier.name +
                       "' (routes[" + std::to_string(i) + "]) matches all its requests");
      break;
    }
  }
}

}  // namespace turnpike::config
