#include "filters/jwt/jwks_cache.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cctype>
#include <string_view>

namespace turnpike::filters::jwt {

namespace asio = boost::asio;
using std::chrono::milliseconds;

// One worker's corner of the shared cache. `io` and `waiting` are read by the worker whose
// fetch ends (to post it a wake-up); everything else is the owning worker's alone.
struct RemoteJwks::Slot {
  std::atomic<asio::io_context*> io{nullptr};
  std::atomic<bool> waiting{false};
  std::shared_ptr<const KeySet> keys;
  std::uint64_t version = 0;
  std::vector<std::weak_ptr<WaiterImpl>> waiters;
};

struct RemoteJwks::WaiterImpl final : Waiter, std::enable_shared_from_this<WaiterImpl> {
  explicit WaiterImpl(asio::io_context& io) : timer(io) {}
  ~WaiterImpl() override { timer.cancel(); }
  // Owning worker only. `done` may release the last reference to this waiter.
  void fire() {
    if (!done) return;
    auto keep = shared_from_this();
    auto f = std::move(done);
    done = nullptr;
    timer.cancel();
    f();
  }
  asio::steady_timer timer;
  std::function<void()> done;
};

namespace {

constexpr std::int64_t kNsPerMs = 1'000'000;

std::int64_t ns(milliseconds d) noexcept {
  return static_cast<std::int64_t>(d.count()) * kNsPerMs;
}

// While no key set was ever fetched, failed attempts are retried this often at most (requests
// keep answering 503 meanwhile).
constexpr milliseconds kColdRetry{1'000};

// A fetch that never reported back (it always does, by its own deadline) stops blocking new
// ones this long after its timeout.
constexpr milliseconds kStaleFetchGrace{10'000};

// Cache-Control max-age in seconds; -1: none; 0: no-cache / no-store.
std::int64_t max_age(const HeaderList& headers) {
  for (const auto& [name, value] : headers) {
    if (name != "cache-control") continue;
    std::string v;
    v.reserve(value.size());
    for (const char c : value)
      v += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (v.find("no-store") != std::string::npos || v.find("no-cache") != std::string::npos)
      return 0;
    const auto at = v.find("max-age=");
    if (at == std::string::npos) continue;
    std::int64_t secs = 0;
    std::size_t i = at + 8;
    if (i < v.size() && v[i] == '"') ++i;
    const std::size_t digits = i;
    while (i < v.size() && std::isdigit(static_cast<unsigned char>(v[i])) && secs < 10'000'000)
      secs = secs * 10 + (v[i++] - '0');
    if (i > digits) return secs;
  }
  return -1;
}

}  // namespace

RemoteJwks::RemoteJwks(Source source)
    : source_(std::move(source)), slots_(std::make_unique<Slot[]>(kMaxWorkers)) {}

RemoteJwks::~RemoteJwks() = default;

std::int64_t RemoteJwks::now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

RemoteJwks::Slot& RemoteJwks::slot(StreamCallbacks& cb) {
  Slot& s = slots_[std::min(cb.worker_index(), kMaxWorkers - 1)];
  if (s.io.load(std::memory_order_relaxed) == nullptr) s.io.store(&cb.io_context());
  return s;
}

const KeySet* RemoteJwks::keys(StreamCallbacks& cb, std::uint64_t& version) {
  Slot& s = slot(cb);
  const std::uint64_t v = version_.load(std::memory_order_acquire);
  if (v != s.version) {
    s.keys = current_.load();
    s.version = v;
  }
  version = s.version;
  return s.keys.get();
}

bool RemoteJwks::try_begin(std::int64_t now, const Timing& t) {
  bool expected = false;
  if (fetching_.compare_exchange_strong(expected, true)) {
    fetch_started_ns_.store(now);
    return true;
  }
  std::int64_t started = fetch_started_ns_.load();
  if (now - started > ns(t.timeout + kStaleFetchGrace) &&
      fetch_started_ns_.compare_exchange_strong(started, now))
    return true;
  return false;
}

void RemoteJwks::maybe_refresh(StreamCallbacks& cb, const Timing& t) {
  if (version_.load(std::memory_order_relaxed) == 0) return;  // the cold path handles it
  const std::int64_t now = now_ns();
  if (now < next_refresh_ns_.load(std::memory_order_relaxed)) return;
  if (fetching_.load(std::memory_order_relaxed)) return;
  if (try_begin(now, t)) start_fetch(cb, t);
}

bool RemoteJwks::request_fetch(StreamCallbacks& cb, const Timing& t, Need need) {
  const std::int64_t now = now_ns();
  if (fetching_.load() && now - fetch_started_ns_.load() <= ns(t.timeout + kStaleFetchGrace))
    return true;
  const std::int64_t last = fetch_started_ns_.load();
  const milliseconds gap =
      need == Need::NoKeys ? std::min(kColdRetry, t.min_refresh_interval) : t.min_refresh_interval;
  if (last != 0 && now - last < ns(gap)) return false;
  if (!try_begin(now, t)) return fetching_.load();  // another worker just started one
  start_fetch(cb, t);
  return true;
}

void RemoteJwks::start_fetch(StreamCallbacks& cb, const Timing& t) {
  started_.fetch_add(1, std::memory_order_relaxed);
  // The fetch outlives any request (and the snapshot that started it): it holds the cache.
  cb.upstreams().fetch(
      source_.cluster, source_.path, source_.host, t.timeout, kMaxBytes,
      [self = shared_from_this(), t](FetchResult r) { self->on_fetched(std::move(r), t); });
}

void RemoteJwks::on_fetched(FetchResult r, const Timing& t) {
  const std::int64_t now = now_ns();
  bool ok = false;
  std::string why;
  if (r.status == 200) {
    JwksResult parsed = parse_jwks(r.body);
    if (parsed.fatal.empty() && !parsed.set.keys.empty()) {
      current_.store(std::make_shared<const KeySet>(std::move(parsed.set)));
      version_.fetch_add(1, std::memory_order_release);
      ok = true;
    } else {
      why = parsed.fatal.empty() ? "no usable signature key" : parsed.fatal;
    }
  } else {
    why = r.status == 0 ? r.error : "status " + std::to_string(r.status);
  }
  // Fetches are single-flight and at most one per min_refresh_interval, so this cannot flood.
  if (!ok) {
    spdlog::warn(
        "jwt: JWKS fetch from cluster '{}' {} failed: {}; {}", source_.cluster, source_.path, why,
        version_.load() == 0 ? "no keys yet: tokens get 503" : "keeping the last good keys");
    failing_.store(true, std::memory_order_relaxed);
  } else if (failing_.exchange(false, std::memory_order_relaxed)) {
    spdlog::info("jwt: JWKS fetch from cluster '{}' {} succeeded again", source_.cluster,
                 source_.path);
  }
  if (ok) {
    milliseconds next = t.refresh_interval;
    if (const std::int64_t age = max_age(r.headers); age >= 0)
      next = std::clamp(milliseconds(age * 1000), t.min_refresh_interval,
                        milliseconds(24 * 3600 * 1000));
    next_refresh_ns_.store(now + ns(next));
  } else {
    // Keep the last good keys; try again after min_refresh_interval.
    next_refresh_ns_.store(now + ns(t.min_refresh_interval));
  }
  fetching_.store(false);
  completed_.fetch_add(1);
  // Wake the requests every worker parked for this fetch, on their own workers. Pairs with
  // wait(): it sets `waiting` and then reads `completed_`; this bumps `completed_` and then
  // reads `waiting` (both sequentially consistent), so no waiter is missed.
  for (unsigned i = 0; i < kMaxWorkers; ++i) {
    Slot& s = slots_[i];
    asio::io_context* io = s.io.load();
    if (io == nullptr || !s.waiting.load()) continue;
    asio::post(*io, [self = shared_from_this(), i] { self->wake(i); });
  }
}

void RemoteJwks::wake(unsigned worker) {
  Slot& s = slots_[worker];
  s.waiting.store(false);
  auto waiters = std::move(s.waiters);
  s.waiters.clear();
  for (auto& w : waiters)
    if (auto p = w.lock()) p->fire();
}

std::shared_ptr<Waiter> RemoteJwks::wait(StreamCallbacks& cb, std::uint64_t seen,
                                         milliseconds timeout, std::function<void()> done) {
  Slot& s = slot(cb);
  auto w = std::make_shared<WaiterImpl>(cb.io_context());
  w->done = std::move(done);
  std::erase_if(s.waiters, [](const auto& x) { return x.expired(); });
  s.waiters.push_back(w);
  s.waiting.store(true);
  if (completed_.load() != seen) {
    // The fetch ended already (perhaps inline): wake up soon, never inline.
    asio::post(cb.io_context(), [self = shared_from_this(), i = cb.worker_index()] {
      self->wake(std::min(i, kMaxWorkers - 1));
    });
  }
  w->timer.expires_after(timeout);
  w->timer.async_wait([weak = std::weak_ptr<WaiterImpl>(w)](const boost::system::error_code&) {
    if (auto p = weak.lock()) p->fire();
  });
  return w;
}

}  // namespace turnpike::filters::jwt
