// `type: jwt`: bearer-token authentication with signed JWTs (RS*, PS*, ES*, EdDSA, HS*). Keys
// come from a JWKS file or an HMAC secret file read at config load, or from a JWKS URL fetched
// through an upstream cluster and shared by every worker (jwks_cache.h). A verified token sets
// the consumer, its groups, scopes and claims for later filters and may forward claims as
// request headers; a repeated token is answered from a per-worker cache (token_cache.h).
#include <openssl/evp.h>

#include <cctype>
#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include "filters/jwt/jwk.h"
#include "filters/jwt/jwks_cache.h"
#include "filters/jwt/token_cache.h"
#include "filters/jwt/verify.h"
#include "turnpike/filters/credentials.h"
#include "turnpike/filters/registry.h"

namespace turnpike::filters {
namespace {

using jwt::Outcome;
using std::chrono::milliseconds;

constexpr std::size_t kMaxFileBytes = 1024 * 1024;
constexpr std::size_t kCacheBytesPerWorker = 16 * 1024 * 1024;
constexpr std::int64_t kNoExpCacheSeconds = 600;  // a token without exp is re-verified this often

enum class SourceKind : std::uint8_t { Header, Query, Cookie };
struct TokenSource {
  SourceKind kind;
  std::string name;  // header names lower-cased
};

struct Settings final : config::FilterSettings {
  jwt::ClaimRules rules;
  jwt::AlgMask allowed = jwt::kAllAlgs;
  std::shared_ptr<const jwt::KeySet> static_keys;  // jwks.file and secret_file
  std::optional<jwt::RemoteJwks::Source> remote;
  jwt::RemoteJwks::Timing timing;
  std::vector<TokenSource> from{{SourceKind::Header, "authorization"}};
  bool forward_token = true;
  bool optional = false;
  std::string realm = "turnpike";
  std::size_t cache_entries = 10'000;
  std::size_t max_token_bytes = 16 * 1024;
  std::string key_digest;  // SHA-256 of the key files' contents
  std::vector<std::string> paths;

  std::vector<std::string> files() const override { return paths; }

  void validate(const config::Config& config,
                const std::function<void(std::string_view, std::string)>& error) const override {
    if (!remote) return;
    for (const auto& c : config.clusters)
      if (c.name == remote->cluster) return;
    error("jwks.cluster", "unknown cluster '" + remote->cluster + "'");
  }
};

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) return {};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

// Reads a whole file (control thread, at load). Empty optional with `err` on failure.
std::optional<std::string> read_file(const std::string& path, std::string& err) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    err = "cannot read '" + path + "'";
    return std::nullopt;
  }
  std::string data;
  char buf[8192];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    data.append(buf, static_cast<std::size_t>(in.gcount()));
    if (data.size() > kMaxFileBytes) {
      err = "'" + path + "' is larger than 1 MiB";
      return std::nullopt;
    }
  }
  return data;
}

bool reserved_header(std::string_view name) {
  return name == "host" || name == "content-length" || name == "transfer-encoding" ||
         name == "connection" || name == "authorization" || name == "cookie" ||
         name.starts_with(':');
}

void parse_jwks_block(config::Reader& r, const config::Node& n, Settings& s,
                      std::vector<jwt::Key>& keys, std::string& key_bytes) {
  const auto m = r.map(n, {"file", "cluster", "path", "host", "refresh_interval",
                           "min_refresh_interval", "timeout"});
  if (!m) return;
  const auto* file = m->get("file");
  const auto* cluster = m->get("cluster");
  if ((file != nullptr) == (cluster != nullptr)) {
    r.error(n, "set exactly one of file (a JWKS file) or cluster (a JWKS URL)");
    return;
  }
  if (file != nullptr) {
    for (const char* k : {"path", "host", "refresh_interval", "min_refresh_interval", "timeout"})
      if (const auto* x = m->get(k))
        r.error(*x, std::string("'") + k + "' applies to a fetched JWKS (jwks.cluster) only");
    const auto written = r.string(*file);
    if (!written) return;
    const std::string path = r.resolve_path(*written);
    s.paths.push_back(path);
    std::string err;
    const auto text = read_file(path, err);
    if (!text) {
      r.error(*file, err);
      return;
    }
    jwt::JwksResult parsed = jwt::parse_jwks(*text);
    if (!parsed.fatal.empty()) {
      r.error(*file, "'" + *written + "': " + parsed.fatal);
      return;
    }
    for (const auto& e : parsed.errors)
      r.error(*file, "'" + *written + "': " + e);
    if (parsed.errors.empty() && parsed.set.keys.empty()) {
      std::string msg = "'" + *written + "' has no usable signature key";
      for (const auto& note : parsed.notes)
        msg += "; " + note;
      r.error(*file, msg);
    }
    key_bytes += *text;
    for (auto& k : parsed.set.keys)
      keys.push_back(std::move(k));
    return;
  }
  jwt::RemoteJwks::Source src;
  if (const auto c = r.string(*cluster)) src.cluster = *c;
  src.path = "/.well-known/jwks.json";
  if (const auto* p = m->get("path")) {
    if (const auto v = r.string(*p)) {
      if (!v->starts_with('/') || v->find_first_of(" \r\n\t#") != std::string::npos)
        r.error(*p, "a path (and query) starting with '/'");
      else
        src.path = *v;
    }
  }
  if (const auto* h = m->get("host")) {
    if (const auto v = r.header_value(*h)) src.host = *v;
  }
  auto& t = s.timing;
  const config::Duration hour{3'600'000};
  if (const auto* x = m->get("refresh_interval"))
    t.refresh_interval =
        r.duration(*x, milliseconds(1'000), 168 * hour).value_or(t.refresh_interval);
  if (const auto* x = m->get("min_refresh_interval"))
    t.min_refresh_interval =
        r.duration(*x, milliseconds(1'000), hour).value_or(t.min_refresh_interval);
  if (const auto* x = m->get("timeout"))
    t.timeout = r.duration(*x, milliseconds(10), milliseconds(60'000)).value_or(t.timeout);
  if (t.min_refresh_interval > t.refresh_interval)
    r.error(*(m->get("min_refresh_interval") ? m->get("min_refresh_interval") : &n),
            "min_refresh_interval is longer than refresh_interval");
  s.remote = std::move(src);
}

void parse_from(config::Reader& r, const config::Node& n, Settings& s) {
  const auto m = r.map(n, {"header", "query", "cookie"});
  if (!m) return;
  s.from.clear();
  for (const auto& [key, value] : m->entries()) {
    if (key == "header") {
      if (auto h = r.header_name(value)) s.from.push_back({SourceKind::Header, std::move(*h)});
    } else if (auto v = r.string(value)) {
      if (v->find_first_of("=&;, \t\r\n") != std::string::npos)
        r.error(value, "not a valid " + key + " name");
      else
        s.from.push_back({key == "query" ? SourceKind::Query : SourceKind::Cookie, *v});
    }
  }
  if (m->entries().empty()) r.error(n, "name at least one of header, query, cookie");
}

std::shared_ptr<const config::FilterSettings> parse(config::Reader& r, const config::Node& block) {
  const auto m =
      r.map(block, {"type", "issuer", "audiences", "jwks", "secret_file", "algorithms",
                    "clock_skew", "from", "forward_claims", "consumer_claim", "groups_claim",
                    "forward_token", "optional", "realm", "cache_entries", "max_token_bytes"});
  if (!m) return nullptr;
  auto s = std::make_shared<Settings>();
  std::vector<jwt::Key> keys;
  std::string key_bytes;

  if (const auto* n = m->get("issuer")) s->rules.issuers = r.strings(*n).value_or(s->rules.issuers);
  if (const auto* n = m->get("audiences"))
    s->rules.audiences = r.strings(*n).value_or(s->rules.audiences);
  if (const auto* n = m->get("jwks")) parse_jwks_block(r, *n, *s, keys, key_bytes);
  if (const auto* n = m->get("secret_file")) {
    if (const auto written = r.string(*n)) {
      const std::string path = r.resolve_path(*written);
      s->paths.push_back(path);
      std::string err;
      if (auto secret = read_file(path, err); !secret) {
        r.error(*n, err);
      } else if (secret->size() < 32) {
        r.error(*n, "'" + *written + "' holds " + std::to_string(secret->size()) +
                        " bytes; an HMAC secret needs at least 32 (HS256), 48 (HS384), 64 (HS512)");
      } else {
        if (secret->back() == '\n')
          r.warning(*n, "'" + *written +
                            "' ends with a newline, which is part of the secret (the file's raw "
                            "bytes are the key)");
        key_bytes += *secret;
        keys.push_back(jwt::hmac_key(std::move(*secret)));
      }
    }
  }
  if (!m->get("jwks") && !m->get("secret_file"))
    r.error(block, "set jwks (a file or a cluster) or secret_file: no key to verify tokens with");

  if (const auto* n = m->get("algorithms")) {
    if (const auto items = r.list(*n)) {
      s->allowed = 0;
      for (const auto& item : *items) {
        const auto name = r.string(item);
        if (!name) continue;
        if (const auto a = jwt::alg_from_name(*name))
          s->allowed |= jwt::alg_bit(*a);
        else if (*name == "none" || *name == "None" || *name == "NONE")
          r.error(item, "'none' (unsigned tokens) is never accepted");
        else
          r.error(item, "unknown algorithm '" + *name + "' (one of " +
                            jwt::alg_names(jwt::kAllAlgs) + ")");
      }
      if (items->empty()) r.error(*n, "name at least one algorithm");
    }
  }
  if (const auto* n = m->get("clock_skew"))
    s->rules.clock_skew = std::chrono::duration_cast<std::chrono::seconds>(
        r.duration(*n, milliseconds(0), milliseconds(3'600'000)).value_or(s->rules.clock_skew));
  if (const auto* n = m->get("from")) parse_from(r, *n, *s);
  if (const auto* n = m->get("forward_claims")) {
    if (const auto e = r.entries(*n)) {
      for (const auto& [claim, value] : e->entries()) {
        auto header = r.header_name(value);
        if (!header) continue;
        if (reserved_header(*header)) {
          r.error(value, "'" + *header + "' cannot carry a claim");
          continue;
        }
        bool dup = false;
        for (const auto& [c, h] : s->rules.forward_claims)
          dup = dup || h == *header;
        if (dup) {
          r.error(value, "header '" + *header + "' already carries another claim");
          continue;
        }
        s->rules.forward_claims.emplace_back(claim, std::move(*header));
      }
    }
  }
  if (const auto* n = m->get("consumer_claim"))
    s->rules.consumer_claim = r.string(*n).value_or(s->rules.consumer_claim);
  if (const auto* n = m->get("groups_claim"))
    s->rules.groups_claim = r.string(*n).value_or(std::string());
  if (const auto* n = m->get("forward_token")) s->forward_token = r.boolean(*n).value_or(true);
  if (const auto* n = m->get("optional")) s->optional = r.boolean(*n).value_or(false);
  if (const auto* n = m->get("realm")) read_realm(r, *n, s->realm);
  if (const auto* n = m->get("cache_entries")) {
    if (const auto v = r.integer(*n, 0, 1'000'000)) s->cache_entries = static_cast<std::size_t>(*v);
  }
  if (const auto* n = m->get("max_token_bytes")) {
    if (const auto v = r.size(*n, 256, 64 * 1024))
      s->max_token_bytes = static_cast<std::size_t>(*v);
  }

  // Keys that no allowed algorithm can use are dead weight; a static-only set where that
  // leaves nothing could never verify a token.
  if (!keys.empty()) {
    auto set = std::make_shared<jwt::KeySet>();
    set->keys = std::move(keys);
    if (!s->remote && (set->algs() & s->allowed) == 0) {
      const auto* at = m->get("algorithms") ? m->get("algorithms") : &block;
      r.error(*at, "no key fits the allowed algorithms (the keys verify " +
                       jwt::alg_names(set->algs()) + ")");
    }
    s->static_keys = std::move(set);
  }
  if (s->rules.issuers.empty() && s->rules.audiences.empty())
    r.warning(block,
              "neither issuer nor audiences is set: any token signed by these keys passes, "
              "whoever it was issued by and for");
  s->key_digest = sha256_hex(key_bytes);
  return s;
}

// ---- the per-request filter -----------------------------------------------------------------

class JwtConfig final : public FilterConfig {
 public:
  JwtConfig(std::shared_ptr<const Settings> s, std::shared_ptr<jwt::RemoteJwks> remote,
            std::shared_ptr<jwt::TokenCaches> caches)
      : s_(std::move(s)),
        remote_(std::move(remote)),
        caches_(std::move(caches)),
        missing_challenge_("Bearer realm=\"" + s_->realm + "\"") {}
  std::unique_ptr<Filter> create() const override;

  const Settings& settings() const noexcept { return *s_; }
  jwt::RemoteJwks* remote() const noexcept { return remote_.get(); }
  jwt::TokenCaches* caches() const noexcept { return caches_.get(); }
  const std::string& missing_challenge() const noexcept { return missing_challenge_; }

 private:
  std::shared_ptr<const Settings> s_;
  std::shared_ptr<jwt::RemoteJwks> remote_;
  std::shared_ptr<jwt::TokenCaches> caches_;
  std::string missing_challenge_;
};

bool starts_with_bearer(std::string_view v) {
  if (v.size() < 7) return false;
  static constexpr std::string_view kBearer = "bearer";
  for (std::size_t i = 0; i < kBearer.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(v[i])) != kBearer[i]) return false;
  return v[6] == ' ' || v[6] == '\t';
}

// Calls f(name, value, whole_item) for each `sep`-separated name=value item.
template <typename F>
void each_pair(std::string_view s, char sep, F&& f) {
  while (!s.empty()) {
    const std::size_t end = s.find(sep);
    const std::string_view item = s.substr(0, end);
    const std::size_t eq = item.find('=');
    f(http::trim_ows(item.substr(0, eq)),
      eq == std::string_view::npos ? std::string_view{} : http::trim_ows(item.substr(eq + 1)),
      item);
    if (end == std::string_view::npos) break;
    s.remove_prefix(end + 1);
  }
}

class JwtFilter final : public Filter {
 public:
  explicit JwtFilter(const JwtConfig& c) : c_(c) {}
  ~JwtFilter() override { waiter_.reset(); }

  Status on_request_headers(http::RequestHead& req, StreamCallbacks& cb) override {
    req_ = &req;
    cb_ = &cb;
    const Settings& s = c_.settings();
    // Only the gateway vouches for these: never pass on a client's own.
    for (const auto& [claim, header] : s.rules.forward_claims)
      req.headers.remove(header);
    if (!find_token()) {
      if (s.optional) return Status::Continue;
      cb.send_local_reply({401, "missing token", {{"WWW-Authenticate", c_.missing_challenge()}}});
      return Status::Stop;
    }
    if (token_.size() > s.max_token_bytes) {
      fail(Outcome::Malformed);
      return Status::Stop;
    }
    return evaluate(true) == Step::Continue ? Status::Continue : Status::Stop;
  }

  void on_destroy() noexcept override { waiter_.reset(); }

 private:
  enum class Step : std::uint8_t { Continue, Replied, Suspended };

  bool find_token() {
    for (const auto& src : c_.settings().from) {
      std::string_view found;
      switch (src.kind) {
        case SourceKind::Header: {
          const std::string* v = req_->headers.get(src.name);
          if (v == nullptr) break;
          std::string_view value = http::trim_ows(*v);
          if (starts_with_bearer(value))
            value = http::trim_ows(value.substr(7));
          else if (src.name == "authorization")
            break;  // another scheme (Basic...): not ours
          found = value;
          break;
        }
        case SourceKind::Query:
          each_pair(req_->query, '&',
                    [&](std::string_view k, std::string_view v, std::string_view) {
                      if (found.empty() && k == src.name) found = v;
                    });
          break;
        case SourceKind::Cookie:
          for (const auto& h : req_->headers) {
            if (!http::iequals(h.name, "cookie")) continue;
            each_pair(h.value, ';', [&](std::string_view k, std::string_view v, std::string_view) {
              if (found.empty() && k == src.name) found = v;
            });
          }
          break;
      }
      if (!found.empty()) {
        token_.assign(found);
        source_ = &src;
        return true;
      }
    }
    return false;
  }

  // forward_token: false. The token stops here, wherever it came from.
  void strip_token() {
    switch (source_->kind) {
      case SourceKind::Header:
        req_->headers.remove(source_->name);
        break;
      case SourceKind::Query: {
        std::string out;
        each_pair(req_->query, '&',
                  [&](std::string_view k, std::string_view, std::string_view item) {
                    if (k == source_->name) return;
                    if (!out.empty()) out += '&';
                    out += item;
                  });
        req_->query = std::move(out);
        break;
      }
      case SourceKind::Cookie: {
        std::string out;
        for (const auto& h : req_->headers) {
          if (!http::iequals(h.name, "cookie")) continue;
          each_pair(h.value, ';', [&](std::string_view k, std::string_view, std::string_view item) {
            if (k == source_->name || http::trim_ows(item).empty()) return;
            if (!out.empty()) out += "; ";
            out += http::trim_ows(item);
          });
        }
        req_->headers.remove("cookie");
        if (!out.empty()) req_->headers.add("Cookie", out);
        break;
      }
    }
  }

  void fail(Outcome o) {
    const std::string_view why = jwt::describe(o);
    std::string challenge = "Bearer error=\"invalid_token\", error_description=\"";
    challenge += why;
    challenge += '"';
    cb_->send_local_reply({401, std::string(why), {{"WWW-Authenticate", std::move(challenge)}}});
  }

  void apply(const jwt::Identity& id) {
    const Settings& s = c_.settings();
    for (const auto& [header, value] : id.forwarded)
      req_->headers.set(header, value);
    RequestContext& ctx = cb_->context();
    if (!id.consumer.empty()) ctx.consumer = id.consumer;
    if (!s.rules.groups_claim.empty()) ctx.groups = id.groups;
    ctx.scopes = id.scopes;
    ctx.claims = id.claims;
    if (!s.forward_token) strip_token();
  }

  Step evaluate(bool may_wait) {
    const Settings& s = c_.settings();
    const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    jwt::RemoteJwks* remote = c_.remote();
    std::uint64_t version = 0;
    const jwt::KeySet* remote_keys = nullptr;
    if (remote != nullptr) {
      remote_keys = remote->keys(*cb_, version);
      if (may_wait) remote->maybe_refresh(*cb_, s.timing);
    }
    jwt::TokenCache* cache =
        c_.caches() != nullptr ? c_.caches()->for_worker(cb_->worker_index()) : nullptr;
    if (cache != nullptr) {
      if (const auto* hit = cache->find(token_, now, version)) {
        apply(hit->identity);
        return Step::Continue;
      }
    }

    jwt::ParsedToken t;
    Outcome o = jwt::parse_token(token_, s.allowed, t);
    if (o == Outcome::Ok) {
      const jwt::KeySet* sets[2] = {s.static_keys.get(), remote_keys};
      o = jwt::verify_signature(t, sets, 2);
      if (o != Outcome::Ok && remote != nullptr) {
        const bool no_keys = remote_keys == nullptr;
        if (may_wait && (no_keys || o == Outcome::UnknownKid)) {
          const std::uint64_t seen = remote->completed();
          const auto need =
              no_keys ? jwt::RemoteJwks::Need::NoKeys : jwt::RemoteJwks::Need::UnknownKid;
          if (remote->request_fetch(*cb_, s.timing, need)) {
            // Suspended until that fetch ends (or its timeout): then decide with what it got.
            waiter_ = remote->wait(*cb_, seen, s.timing.timeout + milliseconds(250),
                                   [this] { after_fetch(); });
            return Step::Suspended;
          }
        }
        if (no_keys) {
          cb_->send_local_reply({503, "jwks unavailable", {}});
          return Step::Replied;
        }
      }
    }
    jwt::Identity id;
    if (o == Outcome::Ok) o = jwt::check_claims(t, s.rules, now, id);
    if (o != Outcome::Ok) {
      fail(o);
      return Step::Replied;
    }
    apply(id);
    if (cache != nullptr) {
      const std::int64_t skew = s.rules.clock_skew.count();
      const std::int64_t until =
          id.exp != 0 ? (id.exp > now + 365 * 86400 ? now + 365 * 86400 : id.exp + skew)
                      : now + kNoExpCacheSeconds;
      cache->insert(token_, std::move(id), until, version);
    }
    return Step::Continue;
  }

  void after_fetch() {
    waiter_.reset();  // the waiter keeps itself alive while it calls us
    if (evaluate(false) == Step::Continue) cb_->resume();  // may run the chain on: last use
  }

  const JwtConfig& c_;
  http::RequestHead* req_ = nullptr;
  StreamCallbacks* cb_ = nullptr;
  std::string token_;
  const TokenSource* source_ = nullptr;
  std::shared_ptr<jwt::Waiter> waiter_;
};

std::unique_ptr<Filter> JwtConfig::create() const {
  return std::make_unique<JwtFilter>(*this);
}

std::shared_ptr<const FilterConfig> build(const config::FilterSettings&, BuildContext& ctx) {
  auto s = std::static_pointer_cast<const Settings>(ctx.instance.settings);
  std::shared_ptr<jwt::RemoteJwks> remote;
  if (s->remote) {
    // One cache per source, whatever instances use it and across reloads: its keys, its one
    // fetch in flight and its unknown-kid rate limit are the identity provider's, not an
    // instance's.
    const std::string key =
        "jwt/jwks/" + s->remote->cluster + "/" + s->remote->host + "/" + s->remote->path;
    remote = ctx.state.get<jwt::RemoteJwks>(
        key, [&] { return std::make_shared<jwt::RemoteJwks>(*s->remote); });
  }
  std::shared_ptr<jwt::TokenCaches> caches;
  if (s->cache_entries > 0) {
    // Any change to the settings or the key files starts an empty cache.
    const std::string key = "jwt/tokens/" + ctx.instance.name + "/" +
                            sha256_hex(ctx.instance.written + "\n" + s->key_digest);
    caches = ctx.state.get<jwt::TokenCaches>(key, [&] {
      return std::make_shared<jwt::TokenCaches>(s->cache_entries, kCacheBytesPerWorker);
    });
  }
  return std::make_shared<JwtConfig>(std::move(s), std::move(remote), std::move(caches));
}

}  // namespace

void register_jwt() {
  register_filter_type({"jwt", parse, build});
}

}  // namespace turnpike::filters
