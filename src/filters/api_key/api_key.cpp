// `type: api_key`: authenticates a request by an API key in a header and/or a query parameter,
// mapped to a `consumers:` entry by the SHA-256 of the key. The consumer and its groups go into
// the request context for authz, limits and ${consumer}; the key itself never goes upstream.
#include <openssl/crypto.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "turnpike/filters/credentials.h"
#include "turnpike/filters/registry.h"

namespace turnpike::filters {
namespace {

struct Settings final : config::FilterSettings {
  std::string header;  // lower-cased; empty: not read from a header
  std::string query;   // the parameter name; empty: not read from the query
  std::string realm = "turnpike";
  std::vector<std::string> consumers;  // empty: every consumer with a key

  void validate(const config::Config& config,
                const std::function<void(std::string_view, std::string)>& error) const override {
    validate_consumer_names(
        config, consumers, [](const config::Consumer& c) { return !c.api_key_sha256.empty(); },
        "api_keys", error);
  }
};

std::shared_ptr<const config::FilterSettings> parse(config::Reader& r, const config::Node& block) {
  const auto m = r.map(block, {"type", "header", "query", "realm", "consumers"});
  if (!m) return nullptr;
  auto s = std::make_shared<Settings>();
  if (const auto* n = m->get("header")) {
    if (auto h = r.header_name(*n)) {
      if (*h == "host" || *h == "content-length" || *h == "transfer-encoding" ||
          *h == "connection" || h->starts_with(':'))
        r.error(*n, "'" + *h + "' cannot carry an API key");
      else
        s->header = std::move(*h);
    }
  }
  if (const auto* n = m->get("query")) {
    if (auto q = r.string(*n)) {
      if (q->find_first_of("&=#?% +") != std::string::npos)
        r.error(*n, "a query parameter name cannot contain '&', '=', '#', '?', '%', '+' or spaces");
      else
        s->query = std::move(*q);
    }
  }
  if (!m->get("header") && !m->get("query")) s->header = "x-api-key";
  if (const auto* n = m->get("realm")) read_realm(r, *n, s->realm);
  if (const auto* n = m->get("consumers")) read_consumer_names(r, *n, s->consumers);
  return s;
}

struct Identity {
  std::string name;
  std::vector<std::string> groups;
};

// Percent-decodes a query component. '+' stays '+' (keys are often base64, sent unencoded);
// a malformed escape stays as written.
std::string percent_decode(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  const auto hexval = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '%' && i + 2 < v.size()) {
      const int hi = hexval(v[i + 1]);
      const int lo = hexval(v[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi << 4 | lo);
        i += 2;
        continue;
      }
    }
    out += v[i];
  }
  return out;
}

class ApiKeyConfig final : public FilterConfig {
 public:
  ApiKeyConfig(std::shared_ptr<const Settings> s, const config::Config& config)
      : s_(std::move(s)), challenge_("ApiKey realm=\"" + s_->realm + "\"") {
    identities_.reserve(config.consumers.size());  // no reallocation: by_digest_ points in
    for (const auto& c : config.consumers) {
      if (c.api_key_sha256.empty()) continue;
      if (!serves(s_->consumers, c.name)) continue;
      const Identity& who = identities_.emplace_back(Identity{c.name, c.groups});
      for (const auto& hex : c.api_key_sha256) {
        if (const auto d = sha256_from_hex(hex)) by_digest_.emplace(*d, &who);
      }
    }
  }
  std::unique_ptr<Filter> create() const override;

  const Settings& settings() const noexcept { return *s_; }
  const std::string& challenge() const noexcept { return challenge_; }

  /// The consumer whose key this is, or nullptr. The digest of the presented key is looked up
  /// (a SHA-256 preimage is what an attacker would need, so the map's own comparisons leak
  /// nothing useful) and the match is confirmed in constant time.
  const Identity* find(std::string_view key) const {
    const Sha256 d = sha256(key);
    const auto it = by_digest_.find(d);
    if (it == by_digest_.end()) return nullptr;
    if (CRYPTO_memcmp(it->first.data(), d.data(), d.size()) != 0) return nullptr;
    return it->second;
  }

 private:
  std::shared_ptr<const Settings> s_;
  std::string challenge_;
  std::vector<Identity> identities_;
  std::unordered_map<Sha256, const Identity*, Sha256Hash> by_digest_;
};

class ApiKeyFilter final : public Filter {
 public:
  explicit ApiKeyFilter(const ApiKeyConfig& c) : c_(c) {}

  Status on_request_headers(http::RequestHead& req, StreamCallbacks& cb) override {
    const Settings& s = c_.settings();
    // The key is looked up where it lies (no copy), before it is removed from the request.
    bool presented = false;
    bool several = false;
    const Identity* who = nullptr;
    if (!s.header.empty()) {
      const std::size_t n = req.headers.count(s.header);
      if (n > 1) several = true;
      if (n >= 1) {
        const std::string* v = req.headers.get(s.header);
        if (v != nullptr && !v->empty()) {
          presented = true;
          who = c_.find(*v);
        }
      }
      req.headers.remove(s.header);
    }
    if (!s.query.empty() && !req.query.empty()) {
      std::optional<std::string> from_query;
      if (take_query_key(req, from_query)) several = true;
      if (!presented && from_query && !from_query->empty()) {
        presented = true;
        who = c_.find(*from_query);
      }
    }
    if (several) return reject(cb, "several API keys");
    if (!presented) return reject(cb, "missing API key");
    if (who == nullptr) return reject(cb, "invalid API key");
    RequestContext& ctx = cb.context();
    ctx.consumer = who->name;
    ctx.groups = who->groups;
    return Status::Continue;
  }

 private:
  Status reject(StreamCallbacks& cb, std::string error) {
    cb.send_local_reply({401, std::move(error), {{"WWW-Authenticate", c_.challenge()}}});
    return Status::Stop;
  }

  // Removes every `query` parameter from the query (and the raw target, so that nothing
  // later sees the key), keeping the others as written and in order. The first value found
  // goes to `out`; returns true when the parameter was there more than once.
  bool take_query_key(http::RequestHead& req, std::optional<std::string>& out) const {
    const std::string& name = c_.settings().query;
    std::string kept;
    std::string_view rest = req.query;
    int found = 0;
    bool first = true;
    while (true) {
      const auto amp = rest.find('&');
      const std::string_view param = rest.substr(0, amp);
      const auto eq = param.find('=');
      const std::string_view pname = param.substr(0, eq);
      if (pname == name ||
          (pname.find('%') != std::string_view::npos && percent_decode(pname) == name)) {
        if (found++ == 0)
          out = eq == std::string_view::npos ? std::string{} : percent_decode(param.substr(eq + 1));
      } else {
        if (!first) kept += '&';
        kept += param;
        first = false;
      }
      if (amp == std::string_view::npos) break;
      rest.remove_prefix(amp + 1);
    }
    if (found == 0) return false;
    req.query = std::move(kept);
    if (const auto q = req.target.find('?'); q != std::string::npos) {
      req.target.resize(q);
      if (!req.query.empty()) {
        req.target += '?';
        req.target += req.query;
      }
    }
    return found > 1;
  }

  const ApiKeyConfig& c_;
};

std::unique_ptr<Filter> ApiKeyConfig::create() const {
  return std::make_unique<ApiKeyFilter>(*this);
}

std::shared_ptr<const FilterConfig> build(const config::FilterSettings&, BuildContext& ctx) {
  return std::make_shared<ApiKeyConfig>(
      std::static_pointer_cast<const Settings>(ctx.instance.settings), ctx.config);
}

}  // namespace

void register_api_key() {
  register_filter_type({"api_key", parse, build});
}

}  // namespace turnpike::filters
