// `type: quota`: N requests per calendar day or month (UTC) per consumer, counted in Redis so
// the count survives restarts and is shared by every instance: one Lua script per request
// checks, INCRs and sets EXPIREAT on a key named after the window
// (turnpike:quota:<instance>:<subject>:2026-11). Over: 429 with Retry-After to the reset and
// the reset time. docs/filters/quota.md.
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "turnpike/filters/redis_client.h"
#include "turnpike/filters/registry.h"

namespace turnpike::filters {
namespace {

enum class Subject : std::uint8_t { Consumer, ClientIp, Header };

struct Settings final : config::FilterSettings {
  config::Rate limit;
  Subject subject = Subject::Consumer;
  std::string header;  // Subject::Header, lower-cased
  bool require_consumer = false;
  bool fail_open = true;  // on_redis_failure: allow
  bool headers = false;

  void validate(const config::Config& config,
                const std::function<void(std::string_view, std::string)>& error) const override {
    if (!config.redis) error("", "quota needs a top-level redis: section");
  }
};

std::shared_ptr<const config::FilterSettings> parse(config::Reader& r, const config::Node& block) {
  const auto m =
      r.map(block, {"type", "limit", "key", "require_consumer", "on_redis_failure", "headers"});
  if (!m) return nullptr;
  auto s = std::make_shared<Settings>();
  bool ok = true;
  if (const auto* n = m->get("limit")) {
    if (const auto rate = r.rate(*n, /*allow_month=*/true)) {
      if (rate->period != config::Rate::Period::Day &&
          rate->period != config::Rate::Period::Month) {
        r.error(*n, "a quota is per calendar day or month: use N/day or N/month");
        ok = false;
      }
      s->limit = *rate;
    } else {
      ok = false;
    }
  } else {
    r.error(block, "missing required key 'limit' (e.g. limit: 10000/day)");
    ok = false;
  }
  if (const auto* n = m->get("key")) {
    if (const auto v = r.string(*n)) {
      if (*v == "consumer") {
        s->subject = Subject::Consumer;
      } else if (*v == "client_ip") {
        s->subject = Subject::ClientIp;
      } else if (v->starts_with("header:")) {
        if (auto name = r.header_name(*n, std::string_view(*v).substr(7))) {
          s->subject = Subject::Header;
          s->header = std::move(*name);
        } else {
          ok = false;
        }
      } else {
        r.error(*n, "unknown key '" + *v + "' (expected consumer, client_ip or header:NAME)");
        ok = false;
      }
    } else {
      ok = false;
    }
  }
  if (const auto* n = m->get("require_consumer")) {
    if (const auto b = r.boolean(*n)) s->require_consumer = *b;
  }
  if (const auto* n = m->get("on_redis_failure")) {
    if (const auto v = r.string(*n)) {
      if (*v == "allow" || *v == "deny") {
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
  return ok ? s : nullptr;
}

// Checks before counting, so refused requests do not use up the next ones; the key expires an
// hour after its window ends (instances' clocks may differ a little around the change).
const redis::Script& quota_script() {
  static const redis::Script script(R"lua(
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return {0, n} end
n = redis.call('INCR', KEYS[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return {1, n}
)lua");
  return script;
}

// The calendar window (UTC) holding `now`: its label and its bounds in seconds since the epoch.
struct Window {
  std::string label;  // "2026-11-23" or "2026-11"
  std::int64_t start = 0;
  std::int64_t end = 0;
};

Window window_at(std::chrono::system_clock::time_point now, config::Rate::Period period) {
  using namespace std::chrono;
  const auto today = floor<days>(now);
  const year_month_day ymd{today};
  char buf[32];
  Window w;
  if (period == config::Rate::Period::Day) {
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02u", static_cast<int>(ymd.year()),
                  static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()));
    w.start = duration_cast<seconds>(today.time_since_epoch()).count();
    w.end = w.start + 86'400;
  } else {
    const year_month ym{ymd.year(), ymd.month()};
    std::snprintf(buf, sizeof buf, "%04d-%02u", static_cast<int>(ym.year()),
                  static_cast<unsigned>(ym.month()));
    const sys_days first{ym / 1};
    const sys_days next{(ym + months{1}) / 1};
    w.start = duration_cast<seconds>(first.time_since_epoch()).count();
    w.end = duration_cast<seconds>(next.time_since_epoch()).count();
  }
  w.label = buf;
  return w;
}

std::string rfc3339(std::int64_t epoch_seconds) {
  using namespace std::chrono;
  const sys_seconds t{seconds{epoch_seconds}};
  const auto day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss hms{t - day};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                static_cast<int>(hms.seconds().count()));
  return buf;
}

class QuotaConfig final : public FilterConfig, public std::enable_shared_from_this<QuotaConfig> {
 public:
  QuotaConfig(std::shared_ptr<const Settings> s, std::string instance, redis::Options redis)
      : s_(std::move(s)), prefix_("turnpike:quota:" + instance + ":"), redis_(std::move(redis)) {}

  std::unique_ptr<Filter> create() const override;

  const Settings& settings() const noexcept { return *s_; }
  const redis::Options& redis_options() const noexcept { return redis_; }

  /// Whose quota this request uses; nullopt: none (no consumer).
  std::optional<std::string> subject(const http::RequestHead& req,
                                     const RequestContext& ctx) const {
    switch (s_->subject) {
      case Subject::Consumer:
        if (ctx.consumer.empty()) return std::nullopt;
        return ctx.consumer;
      case Subject::ClientIp:
        return "ip=" + ctx.client_ip;
      case Subject::Header: {
        const std::string* v = req.headers.get(s_->header);
        if (!v || v->empty()) return std::nullopt;
        return "h=" + *v;
      }
    }
    return std::nullopt;
  }

  std::string redis_key(const std::string& subject, const Window& w) const {
    return prefix_ + subject + ":" + w.label;
  }

  void add_headers(HeaderList& out, const Window& w, std::int64_t now, std::uint64_t used) const {
    const std::uint64_t limit = s_->limit.count;
    const std::uint64_t remaining = used >= limit ? 0 : limit - used;
    const std::int64_t reset = std::max<std::int64_t>(1, w.end - now);
    out.emplace_back("RateLimit-Policy",
                     std::to_string(limit) + ";w=" + std::to_string(w.end - w.start));
    out.emplace_back("RateLimit", "limit=" + std::to_string(limit) +
                                      ", remaining=" + std::to_string(remaining) +
                                      ", reset=" + std::to_string(reset));
    out.emplace_back("X-Quota-Limit", std::to_string(limit));
    out.emplace_back("X-Quota-Remaining", std::to_string(remaining));
    out.emplace_back("X-Quota-Reset", rfc3339(w.end));
  }

  Status decide(const redis::Result& r, const Window& w, std::int64_t now,
                StreamCallbacks& cb) const {
    const bool good = r.ok() && r.reply.kind == redis::Reply::Kind::Array &&
                      r.reply.elements.size() == 2 &&
                      r.reply.elements[0].kind == redis::Reply::Kind::Integer &&
                      r.reply.elements[1].kind == redis::Reply::Kind::Integer;
    if (!good) {
      if (s_->fail_open) return Status::Continue;
      cb.send_local_reply({503, "quota store unavailable", {{"Retry-After", "1"}}});
      return Status::Stop;
    }
    const auto used =
        static_cast<std::uint64_t>(std::max<long long>(0, r.reply.elements[1].integer));
    if (r.reply.elements[0].integer == 1) {
      if (s_->headers) add_headers(cb.context().response_headers, w, now, used);
      return Status::Continue;
    }
    LocalReply reply{429, "quota exceeded", {}};
    reply.headers.emplace_back("Retry-After",
                               std::to_string(std::max<std::int64_t>(1, w.end - now)));
    add_headers(reply.headers, w, now, used);
    cb.send_local_reply(std::move(reply));
    return Status::Stop;
  }

 private:
  std::shared_ptr<const Settings> s_;
  std::string prefix_;
  redis::Options redis_;
};

class QuotaFilter final : public Filter {
 public:
  explicit QuotaFilter(std::shared_ptr<const QuotaConfig> c) : c_(std::move(c)) {}

  Status on_request_headers(http::RequestHead& req, StreamCallbacks& cb) override {
    const Settings& s = c_->settings();
    const auto subject = c_->subject(req, cb.context());
    if (!subject) {
      if (!s.require_consumer) return Status::Continue;
      cb.send_local_reply({403, "quota needs an authenticated consumer", {}});
      return Status::Stop;
    }
    const auto now = std::chrono::system_clock::now();
    Window w = window_at(now, s.limit.period);
    const std::int64_t now_s =
        std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    // Expire an hour after the window: instances whose clocks differ a little still agree.
    std::vector<std::string> args{std::to_string(s.limit.count), std::to_string(w.end + 3'600)};
    std::vector<std::string> keys{c_->redis_key(*subject, w)};
    alive_ = std::make_shared<bool>(true);
    auto client = redis::Client::for_worker(cb.io_context(), c_->redis_options());
    client->eval(quota_script(), std::move(keys), std::move(args),
                 [alive = std::weak_ptr<bool>(alive_), cfg = c_, w = std::move(w), now_s,
                  &cb](redis::Result r) {
                   if (alive.expired()) return;  // the stream is gone, and cb with it
                   if (cfg->decide(r, w, now_s, cb) == Status::Continue) cb.resume();
                 });
    return Status::Stop;
  }

  void on_destroy() noexcept override { alive_.reset(); }

 private:
  std::shared_ptr<const QuotaConfig> c_;
  std::shared_ptr<bool> alive_;
};

std::unique_ptr<Filter> QuotaConfig::create() const {
  return std::make_unique<QuotaFilter>(shared_from_this());
}

std::shared_ptr<const FilterConfig> build(const config::FilterSettings&, BuildContext& ctx) {
  if (!ctx.config.redis) throw std::runtime_error("quota needs a top-level redis: section");
  return std::make_shared<QuotaConfig>(
      std::static_pointer_cast<const Settings>(ctx.instance.settings), ctx.instance.name,
      redis::Options::from(*ctx.config.redis));
}

}  // namespace

void register_quota() {
  register_filter_type({"quota", parse, build});
}

}  // namespace turnpike::filters
