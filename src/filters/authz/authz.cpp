// `type: authz`: lets a request through only when every configured condition holds: the
// client address (deny_cidrs first, then cidrs), the authenticated consumer (consumers, groups)
// and its verified JWT (scopes, claims). It reads what authentication filters earlier in the
// chain put in the request context; it authenticates nobody itself. Every refusal is a 403
// whose error names the condition that failed.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "turnpike/filters/cidr.h"
#include "turnpike/filters/registry.h"

namespace turnpike::filters {
namespace {

struct ClaimRule {
  std::string name;
  std::vector<std::string> values;  // any of them
};

struct Settings final : config::FilterSettings {
  CidrSet deny_cidrs;
  CidrSet cidrs;
  std::vector<std::string> consumers;  // any
  std::vector<std::string> groups;     // any
  std::vector<std::string> scopes;     // all
  std::vector<ClaimRule> claims;       // all, each with any of its values

  bool needs_identity() const noexcept {
    return !consumers.empty() || !groups.empty() || !scopes.empty() || !claims.empty();
  }

  void validate(const config::Config& config,
                const std::function<void(std::string_view, std::string)>& error) const override {
    for (std::size_t i = 0; i < consumers.size(); ++i) {
      if (config.find_consumer(consumers[i]) == nullptr)
        error("consumers[" + std::to_string(i) + "]",
              "no consumer named '" + consumers[i] + "' (see consumers:)");
    }
  }
};

// A list of distinct non-empty strings (a single string is a list of one).
void parse_names(config::Reader& r, const config::Node& n, std::vector<std::string>& out,
                 std::string_view what) {
  auto names = r.strings(n);
  if (!names) return;
  if (names->empty()) r.error(n, "list at least one " + std::string(what));
  for (auto& name : *names) {
    if (std::find(out.begin(), out.end(), name) != out.end()) {
      r.error(n, std::string(what) + " '" + name + "' is listed twice");
      continue;
    }
    out.push_back(std::move(name));
  }
}

std::shared_ptr<const config::FilterSettings> parse(config::Reader& r, const config::Node& block) {
  const auto m =
      r.map(block, {"type", "groups", "scopes", "claims", "cidrs", "deny_cidrs", "consumers"});
  if (!m) return nullptr;
  auto s = std::make_shared<Settings>();
  if (const auto* n = m->get("deny_cidrs")) read_cidrs(r, *n, s->deny_cidrs, false);
  if (const auto* n = m->get("cidrs")) read_cidrs(r, *n, s->cidrs, false);
  if (const auto* n = m->get("consumers")) parse_names(r, *n, s->consumers, "consumer");
  if (const auto* n = m->get("groups")) parse_names(r, *n, s->groups, "group");
  if (const auto* n = m->get("scopes")) {
    parse_names(r, *n, s->scopes, "scope");
    for (const auto& sc : s->scopes)
      if (sc.find_first_of(" \t") != std::string::npos)
        r.error(*n, "a scope cannot contain spaces ('" + sc + "'): list each scope on its own");
  }
  if (const auto* n = m->get("claims")) {
    if (const auto entries = r.entries(*n)) {
      for (const auto& [name, value] : entries->entries()) {
        ClaimRule rule{name, {}};
        parse_names(r, value, rule.values, "value");
        if (!rule.values.empty()) s->claims.push_back(std::move(rule));
      }
      if (entries->entries().empty()) r.error(*n, "name at least one claim");
    }
  }
  if (m->entries().size() <= 1)  // only `type`
    r.error(block, "set at least one of groups, scopes, claims, cidrs, deny_cidrs, consumers");
  return s;
}

bool contains(const std::vector<std::string>& v, std::string_view x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

// A claim the jwt filter stored: a string as it is, anything else as JSON text. An array
// matches when any of its strings is allowed, so `roles: [admin]` matches `"roles": ["a",
// "admin"]`. Numbers and booleans compare as their JSON text ("42", "true").
bool claim_allowed(const std::string& value, const std::vector<std::string>& allowed) {
  if (contains(allowed, value)) return true;
  if (!value.starts_with('[')) return false;
  const auto j = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return false;
  for (const auto& item : j) {
    if (item.is_string() ? contains(allowed, item.get_ref<const std::string&>())
                         : contains(allowed, item.dump()))
      return true;
  }
  return false;
}

class AuthzFilter final : public Filter {
 public:
  explicit AuthzFilter(const Settings& s) : s_(s) {}

  Status on_request_headers(http::RequestHead&, StreamCallbacks& cb) override {
    const RequestContext& ctx = cb.context();
    if (!s_.deny_cidrs.empty() || !s_.cidrs.empty()) {
      const auto ip = parse_ip(ctx.client_ip.empty() ? ctx.client_address : ctx.client_ip);
      if (!ip) return deny(cb, "address not allowed");
      if (s_.deny_cidrs.contains(*ip)) return deny(cb, "address denied");
      if (!s_.cidrs.empty() && !s_.cidrs.contains(*ip)) return deny(cb, "address not allowed");
    }
    if (!s_.needs_identity()) return Status::Continue;
    if (ctx.consumer.empty() && ctx.claims.empty()) return deny(cb, "not authenticated");
    if (!s_.consumers.empty() && !contains(s_.consumers, ctx.consumer))
      return deny(cb, "consumer not allowed");
    if (!s_.groups.empty() && std::none_of(ctx.groups.begin(), ctx.groups.end(),
                                           [&](const auto& g) { return contains(s_.groups, g); }))
      return deny(cb, "consumer not in an allowed group");
    for (const auto& scope : s_.scopes) {
      if (!contains(ctx.scopes, scope)) return deny(cb, "missing scope '" + scope + "'");
    }
    for (const auto& rule : s_.claims) {
      const std::string* v = ctx.claim(rule.name);
      if (v == nullptr) return deny(cb, "missing claim '" + rule.name + "'");
      if (!claim_allowed(*v, rule.values)) return deny(cb, "claim '" + rule.name + "' not allowed");
    }
    return Status::Continue;
  }

 private:
  Status deny(StreamCallbacks& cb, std::string error) {
    cb.send_local_reply({403, std::move(error), {}});
    return Status::Stop;
  }

  const Settings& s_;
};

}  // namespace

void register_authz() {
  register_filter_type({"authz", parse, build_with<AuthzFilter, Settings>});
}

}  // namespace turnpike::filters
