// `type: rate_limit`: a token bucket (`rate`, `burst`) per key (consumer, client_ip, route,
// header:NAME or a list of them). `store: local` keeps one exact budget for the whole process
// in a lock-free GCRA table shared by every worker; `store: redis` shares it between every
// instance using the same Redis, either with a round trip per request (`sync: strict`) or with
// local buckets reconciled every `sync_interval` (`sync: async`). Over the limit: 429 with
// Retry-After and the IETF RateLimit-Policy / RateLimit headers. docs/filters/rate_limit.md.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "filters/rate_limit/gcra_table.h"
#include "turnpike/filters/redis_client.h"
#include "turnpike/filters/registry.h"

namespace turnpike::filters {
namespace {

namespace asio = boost::asio;
using rate_limit::GcraTable;
using rate_limit::key_hash;

enum class KeyPart : std::uint8_t { Consumer, ClientIp, Route, Header };
enum class Store : std::uint8_t { Local, Redis };
enum class Sync : std::uint8_t { Strict, Async };

struct KeySpec {
  KeyPart part = KeyPart::Consumer;
  std::string header;  // lower-cased, for KeyPart::Header
};

struct Settings final : config::FilterSettings {
  config::Rate rate;
  std::uint64_t burst = 0;  // 0 until parsed: the rate's count
  std::vector<KeySpec> key{{KeyPart::Consumer, {}}};
  Store store = Store::Local;
  Sync sync = Sync::Strict;
  config::Duration sync_interval{1'000};
  bool fail_open = true;  // on_redis_failure: allow
  bool headers = false;
  std::uint64_t max_keys = 65'536;

  void validate(const config::Config& config,
                const std::function<void(std::string_view, std::string)>& error) const override {
    if (store == Store::Redis && !config.redis)
      error("store", "store: redis needs a top-level redis: section");
  }

  std::string fingerprint() const {
    std::string f = rate.to_string() + "|" + std::to_string(burst) + "|";
    for (const auto& k : key)
      f += std::to_string(static_cast<int>(k.part)) + k.header + ",";
    f += "|" + std::to_string(static_cast<int>(store)) + std::to_string(static_cast<int>(sync)) +
         "|" + std::to_string(sync_interval.count()) + "|" + std::to_string(max_keys);
    return f;
  }
};

std::optional<KeySpec> parse_key_part(config::Reader& r, const config::Node& n) {
  const auto s = r.string(n);
  if (!s) return std::nullopt;
  if (*s == "consumer") return KeySpec{KeyPart::Consumer, {}};
  if (*s == "client_ip") return KeySpec{KeyPart::ClientIp, {}};
  if (*s == "route") return KeySpec{KeyPart::Route, {}};
  if (s->starts_with("header:")) {
    if (auto name = r.header_name(n, std::string_view(*s).substr(7)))
      return KeySpec{KeyPart::Header, std::move(*name)};
    return std::nullopt;
  }
  r.error(n, "unknown key '" + *s + "' (expected consumer, client_ip, route or header:NAME)");
  return std::nullopt;
}

std::shared_ptr<const config::FilterSettings> parse(config::Reader& r, const config::Node& block) {
  const auto m = r.map(block, {"type", "rate", "burst", "key", "store", "sync", "sync_interval",
                               "on_redis_failure", "headers", "max_keys"});
  if (!m) return nullptr;
  auto s = std::make_shared<Settings>();
  bool ok = true;
  if (const auto* n = m->get("rate")) {
    if (const auto rate = r.rate(*n, /*allow_month=*/false))
      s->rate = *rate;
    else
      ok = false;
  } else {
    r.error(block, "missing required key 'rate' (e.g. rate: 100/s)");
    ok = false;
  }
  s->burst = s->rate.count;
  if (const auto* n = m->get("burst")) {
    if (const auto b = r.integer(*n, 1, 1'000'000'000'000))
      s->burst = static_cast<std::uint64_t>(*b);
    else
      ok = false;
  }
  if (const auto* n = m->get("key")) {
    s->key.clear();
    if (n->is_list()) {
      if (const auto items = r.list(*n)) {
        for (const auto& item : *items) {
          if (auto k = parse_key_part(r, item))
            s->key.push_back(std::move(*k));
          else
            ok = false;
        }
        if (items->empty()) {
          r.error(*n, "needs at least one of consumer, client_ip, route, header:NAME");
          ok = false;
        }
      } else {
        ok = false;
      }
    } else if (auto k = parse_key_part(r, *n)) {
      s->key.push_back(std::move(*k));
    } else {
      ok = false;
    }
  }
  if (const auto* n = m->get("store")) {
    if (const auto v = r.string(*n)) {
      if (*v == "local") {
        s->store = Store::Local;
      } else if (*v == "redis") {
        s->store = Store::Redis;
      } else {
        r.error(*n, "invalid store '" + *v + "' (expected local or redis)");
        ok = false;
      }
    }
  }
  const bool redis = s->store == Store::Redis;
  if (const auto* n = m->get("sync")) {
    if (const auto v = r.string(*n)) {
      if (!redis) {
        r.error(*n, "only with store: redis");
        ok = false;
      } else if (*v == "strict") {
        s->sync = Sync::Strict;
      } else if (*v == "async") {
        s->sync = Sync::Async;
      } else {
        r.error(*n, "invalid sync '" + *v + "' (expected strict or async)");
        ok = false;
      }
    }
  }
  if (const auto* n = m->get("sync_interval")) {
    if (const auto d = r.duration(*n, config::Duration{10}, config::Duration{60'000})) {
      if (!redis || s->sync != Sync::Async) {
        r.error(*n, "only with store: redis and sync: async");
        ok = false;
      }
      s->sync_interval = *d;
    }
  }
  if (const auto* n = m->get("on_redis_failure")) {
    if (const auto v = r.string(*n)) {
      if (!redis) {
        r.error(*n, "only with store: redis");
        ok = false;
      } else if (*v == "allow" || *v == "deny") {
        s->fail_open = *v == "allow";
      } else {
        r.error(*n, "invalid on_redis_failure '" + *v + "' (expected allow or deny)");
        ok = false;
      }
    }
  }
  if (const auto* n = m->get("headers")) {
    if (const auto b = r.boolean(*n)) s->headers = *b;
  }
  if (const auto* n = m->get("max_keys")) {
    if (const auto k = r.integer(*n, 16, 1 << 26)) s->max_keys = static_cast<std::uint64_t>(*k);
  }
  return ok ? s : nullptr;
}

// ---- what every store shares ----------------------------------------------------------------

std::uint64_t now_ns() noexcept {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

std::uint64_t ceil_seconds(std::uint64_t ns) noexcept {
  return (ns + 999'999'999) / 1'000'000'000;
}

// The Redis half of `sync: async`, and the local table of `store: local`. Kept across reloads
// that keep the instance and its settings (StateStore), so a reload does not refill buckets.
struct SharedState {
  SharedState(std::size_t capacity, std::uint64_t interval_ns, std::uint64_t burst)
      : table(capacity, interval_ns, burst) {}
  GcraTable table;
  std::atomic<bool> syncer_started{false};
  std::atomic<bool> redis_ok{true};  // the last reconciliation reached Redis
};

// GCRA in Redis, in microseconds since 2025-01-01 (doubles keep sub-microsecond precision that
// close to their epoch) and on the server's clock (TIME), so instances need not agree on time.
// ARGV: emission interval, burst tolerance (burst × interval), cost, mode ("1": enforce, deny
// over the limit; "0": record admissions made locally, sync: async). Returns {allowed, TAT -
// now} (the TAT before a denial, after an admission).
const redis::Script& gcra_script() {
  static const redis::Script script(R"lua(
local t = redis.call('TIME')
local now = (tonumber(t[1]) - 1735689600) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new = tat + interval * cost
if ARGV[4] == '1' and new - now > limit then
  return {0, math.floor(tat - now)}
end
if new - now > limit then new = now + limit end
if new > now then
  redis.call('SET', KEYS[1], string.format('%.3f', new), 'PX', math.floor((new - now) / 1000) + 1000)
end
return {1, math.floor(new - now)}
)lua");
  return script;
}

class RateLimitConfig;

// Renders the headers for one decision.
struct Verdict {
  bool allowed = true;
  std::uint64_t remaining = 0;
  std::uint64_t retry_after_ns = 0;
  std::uint64_t reset_ns = 0;
};

class RateLimitConfig final : public FilterConfig,
                              public std::enable_shared_from_this<RateLimitConfig> {
 public:
  RateLimitConfig(std::shared_ptr<const Settings> s, std::string instance,
                  std::shared_ptr<SharedState> state, std::optional<redis::Options> redis)
      : s_(std::move(s)),
        instance_(std::move(instance)),
        state_(std::move(state)),
        redis_(std::move(redis)) {
    const auto period_ms = static_cast<std::uint64_t>(s_->rate.length().count());
    interval_us_ = static_cast<double>(period_ms) * 1000.0 / static_cast<double>(s_->rate.count);
    policy_ = std::to_string(s_->rate.count) + ";w=" + std::to_string(period_ms / 1000);
    if (s_->burst != s_->rate.count) policy_ += ";burst=" + std::to_string(s_->burst);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3f", interval_us_);
    interval_arg_ = buf;
    std::snprintf(buf, sizeof buf, "%.3f", interval_us_ * static_cast<double>(s_->burst));
    limit_arg_ = buf;
    redis_prefix_ = "turnpike:rl:" + instance_ + ":";
  }

  std::unique_ptr<Filter> create() const override;

  const Settings& settings() const noexcept { return *s_; }
  SharedState& state() const noexcept { return *state_; }

  std::string key_for(const http::RequestHead& req, const RequestContext& ctx) const {
    std::string key;
    for (const auto& k : s_->key) {
      switch (k.part) {
        case KeyPart::Consumer:
          // No consumer (an anonymous request): the client address stands in.
          key += ctx.consumer.empty() ? "ip=" + ctx.client_ip : "c=" + ctx.consumer;
          break;
        case KeyPart::ClientIp:
          key += "ip=" + ctx.client_ip;
          break;
        case KeyPart::Route:
          key += "r=" + ctx.route;
          break;
        case KeyPart::Header: {
          const std::string* v = req.headers.get(k.header);
          key += v ? "h=" + *v : "ip=" + ctx.client_ip;
          break;
        }
      }
      key += '\x1f';
    }
    return key;
  }

  std::string redis_key(std::uint64_t h) const {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
    return redis_prefix_ + hex;
  }

  void add_headers(HeaderList& out, const Verdict& v) const {
    out.emplace_back("RateLimit-Policy", policy_);
    out.emplace_back("RateLimit", "limit=" + std::to_string(s_->rate.count) +
                                      ", remaining=" + std::to_string(v.remaining) +
                                      ", reset=" + std::to_string(ceil_seconds(v.reset_ns)));
  }

  /// Allowed: Continue (headers added when configured). Denied: the 429 is sent.
  Status apply(const Verdict& v, StreamCallbacks& cb) const {
    if (v.allowed) {
      if (s_->headers) add_headers(cb.context().response_headers, v);
      return Status::Continue;
    }
    LocalReply reply{429, "rate limit exceeded", {}};
    reply.headers.emplace_back(
        "Retry-After", std::to_string(std::max<std::uint64_t>(1, ceil_seconds(v.retry_after_ns))));
    add_headers(reply.headers, v);
    cb.send_local_reply(std::move(reply));
    return Status::Stop;
  }

  /// Redis could not answer: on_redis_failure decides.
  Status redis_failed(StreamCallbacks& cb) const {
    if (s_->fail_open) return Status::Continue;
    cb.send_local_reply({503, "rate limit store unavailable", {{"Retry-After", "1"}}});
    return Status::Stop;
  }

  /// Verdict from the script's {allowed, TAT - now} reply (µs).
  Verdict from_redis(const redis::Reply& r, bool& ok) const {
    Verdict v;
    ok = r.kind == redis::Reply::Kind::Array && r.elements.size() == 2 &&
         r.elements[0].kind == redis::Reply::Kind::Integer &&
         r.elements[1].kind == redis::Reply::Kind::Integer;
    if (!ok) return v;
    const double rel = static_cast<double>(std::max<long long>(0, r.elements[1].integer));
    const double limit = interval_us_ * static_cast<double>(s_->burst);
    v.allowed = r.elements[0].integer == 1;
    v.reset_ns = static_cast<std::uint64_t>(rel * 1000.0);
    if (v.allowed) {
      v.remaining = static_cast<std::uint64_t>(std::max(0.0, (limit - rel) / interval_us_));
    } else {
      v.retry_after_ns =
          static_cast<std::uint64_t>(std::max(0.0, (rel + interval_us_ - limit) * 1000.0));
    }
    return v;
  }

  const redis::Options& redis_options() const { return *redis_; }
  const std::string& interval_arg() const noexcept { return interval_arg_; }
  const std::string& limit_arg() const noexcept { return limit_arg_; }
  double interval_us() const noexcept { return interval_us_; }

  /// sync: async: the first request on some worker starts the reconciliation loop there.
  void ensure_syncer(asio::io_context& io) const {
    bool expected = false;
    if (!state_->syncer_started.compare_exchange_strong(expected, true)) return;
    auto timer = std::make_shared<asio::steady_timer>(io);
    schedule_sync(timer, std::weak_ptr<SharedState>(state_), io);
  }

 private:
  // The loop holds only weak references: it ends when a reload drops this filter's state.
  void schedule_sync(const std::shared_ptr<asio::steady_timer>& timer,
                     std::weak_ptr<SharedState> weak, asio::io_context& io) const {
    timer->expires_after(s_->sync_interval);
    timer->async_wait([timer, weak, &io, self = weak_from_this()](boost::system::error_code ec) {
      auto cfg = self.lock();
      auto st = weak.lock();
      if (ec || !st) return;
      if (!cfg) {
        // A reload replaced the config but kept the state: its new config runs the loop.
        st->syncer_started.store(false);
        return;
      }
      cfg->sync_once(io, st);
      cfg->schedule_sync(timer, weak, io);
    });
  }

  // Reports each key's admissions since the last round (cost n, never denied) and pulls the
  // shared TAT back into the local bucket, so every instance sees what the others spent.
  void sync_once(asio::io_context& io, const std::shared_ptr<SharedState>& st) const {
    auto client = redis::Client::for_worker(io, *redis_);
    const std::uint64_t now = now_ns();
    st->table.drain_unsynced(now, [&](std::size_t slot, std::uint64_t key, std::uint64_t n) {
      client->eval(
          gcra_script(), {redis_key(key)}, {interval_arg_, limit_arg_, std::to_string(n), "0"},
          [weak = std::weak_ptr<SharedState>(st), slot, key, n](redis::Result r) {
            auto s = weak.lock();
            if (!s) return;
            const bool good =
                r.ok() && r.reply.kind == redis::Reply::Kind::Array && r.reply.elements.size() == 2;
            s->redis_ok.store(good, std::memory_order_relaxed);
            if (!good) {
              s->table.restore_unsynced(slot, key, n);
              return;
            }
            const auto rel_us = std::max<long long>(0, r.reply.elements[1].integer);
            s->table.merge(slot, key, now_ns() + static_cast<std::uint64_t>(rel_us) * 1000);
          });
    });
  }

  std::shared_ptr<const Settings> s_;
  std::string instance_;
  std::shared_ptr<SharedState> state_;
  std::optional<redis::Options> redis_;
  double interval_us_ = 0;
  std::string interval_arg_;
  std::string limit_arg_;
  std::string policy_;
  std::string redis_prefix_;
};

class RateLimitFilter final : public Filter {
 public:
  explicit RateLimitFilter(std::shared_ptr<const RateLimitConfig> c) : c_(std::move(c)) {}

  Status on_request_headers(http::RequestHead& req, StreamCallbacks& cb) override {
    const Settings& s = c_->settings();
    const std::uint64_t h = key_hash(c_->key_for(req, cb.context()));
    if (s.store == Store::Local) return local(h, cb, false);
    if (s.sync == Sync::Async) {
      c_->ensure_syncer(cb.io_context());
      if (!c_->state().redis_ok.load(std::memory_order_relaxed) && !s.fail_open)
        return c_->redis_failed(cb);
      // A key this instance has no recent view of (new, or its bucket refilled while idle
      // here) asks Redis once, so an instance never spends a budget others already used up.
      const auto o = c_->state().table.acquire(h, now_ns(), /*count_unsynced=*/true);
      if (o.fresh && o.tracked) return strict(h, cb, o.slot);
      return c_->apply({o.allowed, o.remaining, o.retry_after_ns, o.reset_ns}, cb);
    }
    return strict(h, cb, std::nullopt);
  }

  void on_destroy() noexcept override { alive_.reset(); }

 private:
  Status local(std::uint64_t h, StreamCallbacks& cb, bool count_unsynced) {
    const auto o = c_->state().table.acquire(h, now_ns(), count_unsynced);
    return c_->apply({o.allowed, o.remaining, o.retry_after_ns, o.reset_ns}, cb);
  }

  // One round trip: the script decides atomically for every instance.
  // `slot`: sync: async's first look at a key; the shared TAT also goes into the local bucket.
  Status strict(std::uint64_t h, StreamCallbacks& cb, std::optional<std::size_t> slot) {
    auto client = redis::Client::for_worker(cb.io_context(), c_->redis_options());
    alive_ = std::make_shared<bool>(true);
    client->eval(gcra_script(), {c_->redis_key(h)}, {c_->interval_arg(), c_->limit_arg(), "1", "1"},
                 [alive = std::weak_ptr<bool>(alive_), cfg = c_, &cb, h, slot](redis::Result r) {
                   bool ok = r.ok();
                   Verdict v;
                   if (ok) v = cfg->from_redis(r.reply, ok);
                   if (ok && slot) cfg->state().table.merge(*slot, h, now_ns() + v.reset_ns);
                   // The stream may be gone (client disconnected, filter timeout): then cb is too.
                   if (alive.expired()) return;
                   Status st = ok ? cfg->apply(v, cb) : cfg->redis_failed(cb);
                   if (st == Status::Continue) cb.resume();
                 });
    return Status::Stop;
  }

  std::shared_ptr<const RateLimitConfig> c_;
  std::shared_ptr<bool> alive_;
};

std::unique_ptr<Filter> RateLimitConfig::create() const {
  return std::make_unique<RateLimitFilter>(shared_from_this());
}

std::shared_ptr<const FilterConfig> build(const config::FilterSettings& fs, BuildContext& ctx) {
  auto s = std::static_pointer_cast<const Settings>(ctx.instance.settings);
  (void)fs;
  std::optional<redis::Options> redis;
  if (s->store == Store::Redis) {
    if (!ctx.config.redis)
      throw std::runtime_error("store: redis needs a top-level redis: section");
    redis = redis::Options::from(*ctx.config.redis);
  }
  const std::uint64_t interval_ns =
      static_cast<std::uint64_t>(s->rate.length().count()) * 1'000'000 / s->rate.count;
  std::string key = "rate_limit|" + ctx.instance.name + "|" + s->fingerprint();
  if (redis) key += "|" + redis->key();
  auto state = ctx.state.get<SharedState>(
      key, [&] { return std::make_shared<SharedState>(s->max_keys, interval_ns, s->burst); });
  return std::make_shared<RateLimitConfig>(s, ctx.instance.name, std::move(state),
                                           std::move(redis));
}

}  // namespace

void register_rate_limit() {
  register_filter_type({"rate_limit", parse, build});
}

}  // namespace turnpike::filters
