// `type: basic_auth`: HTTP Basic authentication (RFC 7617) against the `consumers:` that have a
// `basic_auth.password_hash` (bcrypt or SHA-512-crypt, verified with libcrypt's crypt_r). The
// user name is the consumer's name; the consumer and its groups go into the request context.
//
// A bcrypt verification costs tens of milliseconds of CPU at cost 10: far too long for an
// event loop, so it runs on a small process-wide pool (CryptPool) while the request waits
// suspended. Each worker keeps a bounded cache (with a TTL) of credentials it has verified,
// keyed by a SHA-256 of (password hash, user, password): a client sending the same good
// credentials again pays one hash on the worker, no bcrypt and no suspension. Failures are
// never cached. An unknown user costs a real verification too (against another consumer's
// hash), so timing does not tell which users exist.
#include <crypt.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include "turnpike/filters/credentials.h"
#include "turnpike/filters/registry.h"

namespace turnpike::filters {
namespace {

using Clock = std::chrono::steady_clock;

struct Settings final : config::FilterSettings {
  std::string realm = "turnpike";
  std::vector<std::string> consumers;  // empty: every consumer with a password hash
  bool forward_credentials = false;    // keep Authorization on the request sent upstream
  std::uint64_t cache_entries = 1024;  // verified credentials per worker; 0: no cache
  config::Duration cache_ttl{std::chrono::minutes(5)};

  void validate(const config::Config& config,
                const std::function<void(std::string_view, std::string)>& error) const override {
    validate_consumer_names(
        config, consumers, [](const config::Consumer& c) { return !c.password_hash.empty(); },
        "basic_auth.password_hash", error);
    if (consumers.empty() &&
        std::none_of(config.consumers.begin(), config.consumers.end(),
                     [](const config::Consumer& c) { return !c.password_hash.empty(); }))
      error("", "no consumer has a basic_auth.password_hash, so nobody could pass");
  }
};

std::shared_ptr<const config::FilterSettings> parse(config::Reader& r, const config::Node& block) {
  const auto m = r.map(block, {"type", "realm", "consumers", "forward_credentials", "cache"});
  if (!m) return nullptr;
  auto s = std::make_shared<Settings>();
  if (const auto* n = m->get("realm")) read_realm(r, *n, s->realm);
  if (const auto* n = m->get("consumers")) read_consumer_names(r, *n, s->consumers);
  if (const auto* n = m->get("forward_credentials")) {
    if (const auto b = r.boolean(*n)) s->forward_credentials = *b;
  }
  if (const auto* n = m->get("cache")) {
    if (const auto c = r.map(*n, {"max_entries", "ttl"})) {
      if (const auto* e = c->get("max_entries")) {
        if (const auto v = r.integer(*e, 0, 1'000'000))
          s->cache_entries = static_cast<std::uint64_t>(*v);
      }
      if (const auto* t = c->get("ttl")) {
        if (const auto v = r.duration(*t, config::Duration{1'000}, std::chrono::hours(24)))
          s->cache_ttl = *v;
      }
    }
  }
  return s;
}

using Digest = Sha256;

// Credentials this worker verified recently: least recently used first out when full, and
// nothing older than the TTL. Owning worker only.
class VerifiedCache {
 public:
  VerifiedCache(std::size_t capacity, Clock::duration ttl) : capacity_(capacity), ttl_(ttl) {
    map_.reserve(std::min<std::size_t>(capacity, 4096));
  }

  bool contains(const Digest& key, Clock::time_point now) {
    const auto it = map_.find(key);
    if (it == map_.end()) return false;
    if (it->second.expires <= now) {
      order_.erase(it->second.pos);
      map_.erase(it);
      return false;
    }
    order_.splice(order_.begin(), order_, it->second.pos);
    return true;
  }

  void insert(const Digest& key, Clock::time_point now) {
    if (const auto it = map_.find(key); it != map_.end()) {
      it->second.expires = now + ttl_;
      order_.splice(order_.begin(), order_, it->second.pos);
      return;
    }
    while (map_.size() >= capacity_ && !order_.empty()) {
      map_.erase(order_.back());
      order_.pop_back();
    }
    order_.push_front(key);
    map_.emplace(key, Entry{now + ttl_, order_.begin()});
  }

  std::size_t size() const noexcept { return map_.size(); }

 private:
  struct Entry {
    Clock::time_point expires;
    std::list<Digest>::iterator pos;
  };
  std::size_t capacity_;
  Clock::duration ttl_;
  std::unordered_map<Digest, Entry, Sha256Hash> map_;
  std::list<Digest> order_;  // most recently used first
};

// One cache per worker, made by the worker itself on first use: slot i is only ever touched
// by worker i, so there is nothing to lock. Kept across reloads that keep the instance (the
// cache key includes the password hash, so a changed hash never matches an old entry).
class CacheShards {
 public:
  static constexpr unsigned kMaxWorkers = 1024;  // config: workers 1..1024
  CacheShards(std::size_t capacity, Clock::duration ttl)
      : capacity_(capacity), ttl_(ttl), slots_(capacity == 0 ? 0 : kMaxWorkers) {}

  VerifiedCache* for_worker(unsigned worker) {
    if (worker >= slots_.size()) return nullptr;
    auto& slot = slots_[worker];
    if (!slot) slot = std::make_unique<VerifiedCache>(capacity_, ttl_);
    return slot.get();
  }

 private:
  std::size_t capacity_;
  Clock::duration ttl_;
  std::vector<std::unique_ptr<VerifiedCache>> slots_;
};

struct Account {
  std::string name;
  std::vector<std::string> groups;
  std::string password_hash;
};

// crypt_r's state is ~32 KiB: one per thread, on the heap, never on a coroutine's stack.
bool crypt_matches(const std::string& password, const std::string& hash) {
  thread_local std::unique_ptr<crypt_data> data;
  if (!data) data = std::make_unique<crypt_data>();  // value-initialized: zeroed, as required
  const char* out = crypt_r(password.c_str(), hash.c_str(), data.get());
  if (out == nullptr || out[0] == '*') return false;  // "*0"/"*1": failure tokens
  const std::size_t n = std::strlen(out);
  return n == hash.size() && CRYPTO_memcmp(out, hash.data(), n) == 0;
}

// Strict standard base64 (RFC 4648 section 4); padding optional. nullopt when malformed.
std::optional<std::string> base64_decode(std::string_view in) {
  while (!in.empty() && in.back() == '=')
    in.remove_suffix(1);
  if (in.size() % 4 == 1) return std::nullopt;
  const auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(in.size() * 3 / 4);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const int v = val(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

// Encoded credentials longer than this are refused unread (a user name and a password fit
// in far less; this bounds the work one header can cause).
constexpr std::size_t kMaxEncoded = 4096;

class BasicAuthConfig final : public FilterConfig {
 public:
  BasicAuthConfig(std::shared_ptr<const Settings> s, BuildContext& ctx)
      : s_(std::move(s)), challenge_("Basic realm=\"" + s_->realm + "\", charset=\"UTF-8\"") {
    for (const auto& c : ctx.config.consumers) {
      if (c.password_hash.empty()) continue;
      if (!serves(s_->consumers, c.name)) continue;
      if (dummy_hash_.empty()) dummy_hash_ = c.password_hash;
      accounts_.emplace(c.name, Account{c.name, c.groups, c.password_hash});
    }
    if (s_->cache_entries > 0) {
      const auto ttl = std::chrono::duration_cast<Clock::duration>(s_->cache_ttl);
      const std::string key = "basic_auth/" + ctx.instance.name + "/" +
                              std::to_string(s_->cache_entries) + "/" +
                              std::to_string(s_->cache_ttl.count());
      const auto entries = static_cast<std::size_t>(s_->cache_entries);
      cache_ = ctx.state.get<CacheShards>(
          key, [&] { return std::make_shared<CacheShards>(entries, ttl); });
    }
  }
  std::unique_ptr<Filter> create() const override;

  const Settings& settings() const noexcept { return *s_; }
  const std::string& challenge() const noexcept { return challenge_; }

  /// What checking these credentials takes. `account` is the consumer named `user` (nullptr:
  /// unknown, which fails whatever crypt_r says). `done` when this worker verified the same
  /// credentials within the TTL; otherwise crypt_r must check the password against `hash` (for
  /// an unknown user another consumer's hash: the same work, so no user enumeration by timing).
  struct Check {
    const Account* account = nullptr;
    bool done = false;
    const std::string* hash = nullptr;  // in this config; nullptr: nothing to check against
    Digest cache_key{};
  };

  Check prepare(std::string_view user, std::string_view password, unsigned worker) const {
    Check c;
    const auto it = accounts_.find(user);
    if (it == accounts_.end()) {
      if (!dummy_hash_.empty()) c.hash = &dummy_hash_;
      return c;
    }
    c.account = &it->second;
    c.hash = &c.account->password_hash;
    if (VerifiedCache* cache = cache_ ? cache_->for_worker(worker) : nullptr) {
      // (hash, user, password), length-prefixed: a changed hash never matches an old entry.
      c.cache_key = sha256_of_parts({*c.hash, user, password});
      c.done = cache->contains(c.cache_key, Clock::now());
    }
    return c;
  }

  /// After crypt_r accepted the password, on the worker that asked.
  void remember(const Check& c, unsigned worker) const {
    if (VerifiedCache* cache = cache_ ? cache_->for_worker(worker) : nullptr)
      cache->insert(c.cache_key, Clock::now());
  }

 private:
  std::shared_ptr<const Settings> s_;
  std::string challenge_;
  // By name, looked up with the request's string_view (no copy).
  struct NameHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view v) const noexcept {
      return std::hash<std::string_view>{}(v);
    }
  };
  std::unordered_map<std::string, Account, NameHash, std::equal_to<>> accounts_;
  std::string dummy_hash_;  // a configured hash: unknown users cost a real verification
  std::shared_ptr<CacheShards> cache_;
};

// Password checks run here, never on a worker. One pool for the process with half the cores
// (at least one thread), so that a burst of logins cannot take the CPU from the event loops;
// at most kMaxQueued checks wait (beyond that a request gets 503 with Retry-After rather than
// joining an unbounded queue). Lives until exit; its jobs hold no worker state.
class CryptPool {
 public:
  static constexpr int kMaxQueued = 256;

  static CryptPool& instance() {
    static CryptPool pool;
    return pool;
  }

  bool try_submit(std::function<void()> job) {
    if (queued_.fetch_add(1, std::memory_order_relaxed) >= kMaxQueued) {
      queued_.fetch_sub(1, std::memory_order_relaxed);
      return false;
    }
    boost::asio::post(pool_, [this, job = std::move(job)] {
      job();
      queued_.fetch_sub(1, std::memory_order_relaxed);
    });
    return true;
  }

 private:
  CryptPool() : pool_(std::max(1u, std::thread::hardware_concurrency() / 2)) {}
  boost::asio::thread_pool pool_;
  std::atomic<int> queued_{0};
};

class BasicAuthFilter;

// A check in flight, shared by the filter and the pool's job. The job posts its verdict to the
// worker only while the filter is still there; the mutex orders that against the filter going
// away (which happens before its worker's io_context is destroyed). Touched once per bcrypt
// check, never on the cached path.
struct PendingCheck {
  std::mutex m;
  BasicAuthFilter* filter = nullptr;  // nullptr: the request went away
  boost::asio::io_context* io = nullptr;
};

class BasicAuthFilter final : public Filter {
 public:
  explicit BasicAuthFilter(const BasicAuthConfig& c) : c_(c) {}
  ~BasicAuthFilter() override { cancel(); }

  Status on_request_headers(http::RequestHead& req, StreamCallbacks& cb) override {
    const std::size_t n = req.headers.count("authorization");
    if (n == 0) return reject(cb, "missing credentials");
    if (n > 1) return reject(cb, "malformed credentials");
    std::string_view v = http::trim_ows(*req.headers.get("authorization"));
    const auto sp = v.find_first_of(" \t");
    if (sp == std::string_view::npos || !http::iequals(v.substr(0, sp), "basic"))
      return reject(cb, "missing credentials");  // another scheme: not ours to judge
    const std::string_view encoded = http::trim_ows(v.substr(sp + 1));
    if (encoded.empty() || encoded.size() > kMaxEncoded) return reject(cb, "malformed credentials");
    auto decoded = base64_decode(encoded);
    if (!decoded) return reject(cb, "malformed credentials");
    const auto colon = decoded->find(':');
    if (colon == std::string::npos) {
      OPENSSL_cleanse(decoded->data(), decoded->size());
      return reject(cb, "malformed credentials");
    }
    if (decoded->find('\0', colon) != std::string::npos) {
      // crypt(3) would stop at the NUL and check a shorter password: never a match.
      OPENSSL_cleanse(decoded->data(), decoded->size());
      return reject(cb, "invalid credentials");
    }
    const std::string_view user = std::string_view(*decoded).substr(0, colon);
    const std::string_view password = std::string_view(*decoded).substr(colon + 1);
    // Only a successful check lets the request go upstream, so the credentials can go now.
    if (!c_.settings().forward_credentials) req.headers.remove("authorization");
    check_ = c_.prepare(user, password, cb.worker_index());
    if (check_.done) {
      OPENSSL_cleanse(decoded->data(), decoded->size());
      return accept(cb);
    }
    if (check_.hash == nullptr) {  // no consumer has a hash: nothing to spend time on
      OPENSSL_cleanse(decoded->data(), decoded->size());
      return reject(cb, "invalid credentials");
    }
    cb_ = &cb;
    pending_ = std::make_shared<PendingCheck>();
    pending_->filter = this;
    pending_->io = &cb.io_context();
    const bool queued = CryptPool::instance().try_submit(
        [p = pending_, hash = *check_.hash, password = std::string(password)]() mutable {
          const bool ok = crypt_matches(password, hash);
          OPENSSL_cleanse(password.data(), password.size());
          const std::lock_guard lock(p->m);
          if (p->io != nullptr) boost::asio::post(*p->io, [p, ok] { deliver(p, ok); });
        });
    OPENSSL_cleanse(decoded->data(), decoded->size());
    if (!queued) {
      pending_.reset();
      cb.send_local_reply({503, "too many password checks in progress", {{"Retry-After", "1"}}});
    }
    return Status::Stop;
  }

  void on_destroy() noexcept override { cancel(); }

 private:
  // On the worker: the verdict of a check, if the filter that asked is still there.
  static void deliver(const std::shared_ptr<PendingCheck>& p, bool ok) {
    BasicAuthFilter* f = nullptr;
    {
      const std::lock_guard lock(p->m);
      f = p->filter;
    }
    if (f != nullptr) f->finish(ok);
  }

  void finish(bool ok) {
    cancel();
    StreamCallbacks& cb = *cb_;
    if (!ok || check_.account == nullptr) {
      reject(cb, "invalid credentials");
      return;
    }
    c_.remember(check_, cb.worker_index());
    if (accept(cb) == Status::Continue) cb.resume();  // may run the chain on: last use
  }

  Status accept(StreamCallbacks& cb) {
    RequestContext& ctx = cb.context();
    ctx.consumer = check_.account->name;
    ctx.groups = check_.account->groups;
    return Status::Continue;
  }

  void cancel() noexcept {
    if (!pending_) return;
    {
      const std::lock_guard lock(pending_->m);
      pending_->filter = nullptr;
      pending_->io = nullptr;
    }
    pending_.reset();
  }

  Status reject(StreamCallbacks& cb, std::string error) {
    cb.send_local_reply({401, std::move(error), {{"WWW-Authenticate", c_.challenge()}}});
    return Status::Stop;
  }

  const BasicAuthConfig& c_;
  BasicAuthConfig::Check check_;
  StreamCallbacks* cb_ = nullptr;
  std::shared_ptr<PendingCheck> pending_;
};

std::unique_ptr<Filter> BasicAuthConfig::create() const {
  return std::make_unique<BasicAuthFilter>(*this);
}

std::shared_ptr<const FilterConfig> build(const config::FilterSettings&, BuildContext& ctx) {
  return std::make_shared<BasicAuthConfig>(
      std::static_pointer_cast<const Settings>(ctx.instance.settings), ctx);
}

}  // namespace

void register_basic_auth() {
  register_filter_type({"basic_auth", parse, build});
}

}  // namespace turnpike::filters
