#include "upstream/cluster_pool.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

#include "http1/client_connection.h"
#include "http2/client_connection.h"
#include "support/spawn.h"
#include "upstream/connector.h"

namespace turnpike::upstream {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {
// Connections idle for less than this are handed out without a liveness probe.
constexpr auto kProbeAfter = std::chrono::milliseconds(1000);

http2::ClientSettings h2_settings(const config::ClusterHttp2& c) {
  http2::ClientSettings s;
  s.max_concurrent_streams = c.max_concurrent_streams;
  s.initial_window_size = c.initial_window_size;
  s.connection_window_size = c.connection_window_size;
  return s;
}

// Connects an HTTP/2 connection whose streams may already be waiting for it.
asio::awaitable<void> connect_h2(std::shared_ptr<http2::ClientConnection> conn,
                                 tcp::endpoint endpoint, std::chrono::milliseconds timeout,
                                 std::shared_ptr<tls::ClientContext> tls, std::string tls_name,
                                 std::string label) {
  Connection c = co_await connect(endpoint, timeout, tls.get(), tls_name, true, label);
  if (c.ec)
    conn->connect_failed(c.ec);
  else if (c.tls)
    conn->start(std::move(c.tls));
  else
    conn->start(std::move(c.socket));
}
}  // namespace

struct EndpointSlots::Waiter {
  explicit Waiter(const asio::any_io_executor& ex) : timer(ex) {}
  asio::steady_timer timer;                       // expires at the deadline; cancelled when woken
  std::shared_ptr<http1::ClientConnection> conn;  // handed over by release()
  bool woken = false;
};

bool EndpointSlots::wake(std::shared_ptr<http1::ClientConnection> conn) noexcept {
  if (waiters.empty()) return false;
  Waiter* w = waiters.front();
  waiters.pop_front();
  w->woken = true;
  w->conn = std::move(conn);
  w->timer.cancel();
  return true;
}

void ConnectWait::cancel() noexcept {
  cancelled = true;
  if (waiter != nullptr) static_cast<EndpointSlots::Waiter*>(waiter)->timer.cancel();
}

const char* overflow_name(Overflow o) noexcept {
  switch (o) {
    case Overflow::MaxConnections:
      return "max_connections";
    case Overflow::MaxPendingRequests:
      return "max_pending_requests";
    case Overflow::MaxRequests:
      return "max_requests";
    case Overflow::None:
      break;
  }
  return "";
}

namespace {
// This worker's share of a process-wide limit (at least 1 when the limit is).
std::uint32_t share(std::uint32_t limit, unsigned workers) noexcept {
  if (limit == 0) return 0;
  return std::max<std::uint32_t>(1, (limit + workers - 1) / workers);
}
}  // namespace

void ClusterPool::set_limits() noexcept {
  const config::ClusterLimits& l = config_->limits;
  max_connections_ = share(l.max_connections, workers_);
  max_pending_ = share(l.max_pending_requests, workers_);
  max_requests_ = share(l.max_requests, workers_);
  max_retries_ = share(l.max_retries, workers_);
}

// A connection counted in its endpoint's slots while it exists: its deleter gives the slot
// back and lets the first waiting request open one (the pool may be gone by then; the slots
// are shared).
template <class Conn, class... Args>
std::shared_ptr<Conn> ClusterPool::make_connection(EndpointState& ep, Args&&... args) {
  std::shared_ptr<EndpointSlots> slots = ep.slots;
  ++slots->open;
  try {
    return std::shared_ptr<Conn>(new Conn(std::forward<Args>(args)...), [slots](Conn* c) noexcept {
      delete c;
      if (slots->open > 0) --slots->open;
      slots->wake(nullptr);
    });
  } catch (...) {
    --slots->open;
    throw;
  }
}

ClusterPool::ClusterPool(const config::Cluster& cluster, asio::any_io_executor ex,
                         std::shared_ptr<tls::ClientContext> tls, ClusterHosts hosts,
                         unsigned workers)
    : config_(&cluster),
      ex_(std::move(ex)),
      tls_(std::move(tls)),
      workers_(std::max(1u, workers)),
      hosts_(std::move(hosts)),
      h2_(cluster.protocol != "http1") {
  set_limits();
  endpoints_.reserve(cluster.endpoints.size());
  for (const auto& e : cluster.endpoints) {
    EndpointState st;
    st.endpoint = tcp::endpoint(asio::ip::make_address(e.address), e.port);
    st.label = endpoint_label(e);
    st.weight = e.weight;
    st.tls_name = endpoint_tls_name(cluster, e);
    st.index = endpoints_.size();
    endpoints_.push_back(std::move(st));
  }
  active_.assign(endpoints_.size(), 0);
  if (hosts_.hosts.size() != endpoints_.size() || !hosts_.health) {  // private state
    hosts_.hosts.clear();
    hosts_.health = std::make_shared<ClusterHealth>();
    for (const auto& ep : endpoints_) {
      auto h = std::make_shared<HostState>();
      h->cluster = cluster.name;
      h->label = ep.label;
      hosts_.hosts.push_back(std::move(h));
    }
  }
  std::vector<HostInfo> infos;
  infos.reserve(endpoints_.size());
  for (const auto& ep : endpoints_)
    infos.push_back({ep.label, static_cast<std::uint32_t>(ep.weight)});
  // Each worker draws from its own sequence.
  const auto seed =
      static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
      reinterpret_cast<std::uintptr_t>(this);
  // A DNS cluster whose names resolved to nothing yet has no endpoint: none_usable().
  if (!infos.empty()) lb_ = LoadBalancer::make(cluster.lb_policy, std::move(infos), seed);
}

void ClusterPool::adopt(ClusterPool& before) noexcept {
  if (before.h2_ != h2_) return;
  for (auto& ep : endpoints_) {
    for (auto& old : before.endpoints_) {
      if (old.label != ep.label || old.tls_name != ep.tls_name) continue;
      ep.idle = std::move(old.idle);
      old.idle.clear();
      ep.h2 = std::move(old.h2);
      old.h2.clear();
      ep.slots = old.slots;  // the connections count in (and release to) the same slots
      break;
    }
  }
}

void ClusterPool::rebind(const config::Cluster& same_definition,
                         std::shared_ptr<tls::ClientContext> tls, ClusterHosts hosts) noexcept {
  config_ = &same_definition;
  tls_ = std::move(tls);
  set_limits();
  if (hosts.hosts.size() == endpoints_.size()) {
    hosts_ = std::move(hosts);
    seen_version_ = ~std::uint64_t{0};  // look again
  }
}

void ClusterPool::refresh_slow(std::chrono::steady_clock::time_point now,
                               std::uint64_t version) noexcept {
  seen_version_ = version;
  next_return_ = std::chrono::steady_clock::time_point::max();
  usable_.assign(endpoints_.size(), 1);
  std::size_t usable = endpoints_.size();
  for (std::size_t i = 0; i < hosts_.hosts.size(); ++i) {
    HostState& h = *hosts_.hosts[i];
    const bool ejected = is_ejected(h, *hosts_.health, now);
    if (!ejected && !h.unhealthy.load(std::memory_order_relaxed)) continue;
    usable_[i] = 0;
    --usable;
    if (ejected) next_return_ = std::min(next_return_, ejected_until(h));
  }
  // Below panic_threshold, balance over every endpoint rather than overload the few left.
  const bool panic = below_panic_threshold(usable, endpoints_.size(), config_->panic_threshold);
  all_usable_ = usable == endpoints_.size() || panic;
  none_usable_ = endpoints_.empty() || (usable == 0 && !panic);
  if (panic != hosts_.health->panicking.load(std::memory_order_relaxed) &&
      hosts_.health->panicking.exchange(panic, std::memory_order_relaxed) != panic) {
    if (panic)
      spdlog::warn(
          "cluster '{}': only {} of {} endpoints usable, below panic_threshold {}%: balancing "
          "over all of them",
          config_->name, usable, endpoints_.size(), config_->panic_threshold);
    else
      spdlog::info("cluster '{}': {} of {} endpoints usable, panic over", config_->name, usable,
                   endpoints_.size());
  }
}

EndpointState& ClusterPool::pick(std::optional<std::uint64_t> hash_key, const EndpointState* avoid,
                                 std::chrono::steady_clock::time_point now) noexcept {
  // One endpoint: it is the answer whatever its health (none_usable() said whether to try).
  if (endpoints_.size() == 1) return endpoints_.front();
  refresh(now);
  Usable usable;
  if (!all_usable_) usable.mask = usable_;
  if (avoid != nullptr) usable.avoid = avoid->index;
  return endpoints_[lb_->pick(active_, hash_key, usable)];
}

void ClusterPool::usage(std::vector<EndpointUse>& out) const {
  for (const auto& ep : endpoints_) {
    EndpointUse u;
    u.cluster = config_->name;
    u.label = ep.label;
    u.active = active_[ep.index];
    u.open = ep.slots->open;
    u.idle = static_cast<std::uint32_t>(ep.idle.size());
    for (const auto& c : ep.h2)
      u.idle += c->active_streams() == 0 ? 1 : 0;
    u.requests = ep.requests;
    u.failures = ep.failures;
    out.push_back(std::move(u));
  }
}

void ClusterPool::report_slow(const EndpointState& ep, Outcome outcome,
                              std::string_view why) noexcept {
  if (outcome == Outcome::GatewayFailure) ++endpoints_[ep.index].failures;
  upstream::report(*config_, hosts_, ep.index, outcome, why);
}

ClusterPool::Lease ClusterPool::take(EndpointState& ep, bool allow_reuse, bool probe) {
  Lease lease;
  if (h2_) {
    std::erase_if(ep.h2, [](const auto& c) { return c->is_closed(); });
    if (allow_reuse) {
      for (auto& c : ep.h2) {
        if (!c->has_capacity()) continue;
        lease.reused = c->served();
        lease.conn = c->open_stream();
        return lease;
      }
    }
    // At max_connections with every connection full: no lease; connect() waits in the queue.
    if (ep.slots->open >= max_connections_ && !ep.h2.empty()) return lease;
    // A new connection; the stream's request waits for it to be up.
    auto c =
        make_connection<http2::ClientConnection>(ep, ex_, h2_settings(config_->http2), ep.label);
    c->on_stream_done([slots = ep.slots]() noexcept { slots->wake(nullptr); });
    asio::co_spawn(
        ex_, connect_h2(c, ep.endpoint, config_->connect_timeout, tls_, ep.tls_name, ep.label),
        support::log_exception("upstream h2 connect",
                               [c] { c->connect_failed(asio::error::operation_aborted); }));
    ep.h2.push_back(c);
    lease.conn = c->open_stream();
    return lease;
  }
  if (!allow_reuse) return lease;
  const auto now = std::chrono::steady_clock::now();
  while (!ep.idle.empty()) {
    auto conn = std::move(ep.idle.back());
    ep.idle.pop_back();
    if ((probe || now - conn->idle_since() > kProbeAfter) && !conn->still_alive()) {
      conn->close();
      continue;
    }
    lease.conn = std::move(conn);
    lease.reused = true;
    return lease;
  }
  return lease;
}

// One turn in the endpoint's queue at max_connections, in a queue bounded by
// max_pending_requests: until a connection is released (handed over) or closed, an HTTP/2 stream
// ends, `deadline` passes or the request ends (what it was handed then goes to the next in
// line). The lease to answer with (refused, aborted, or a connection handed over), or none when
// woken to look again.
asio::awaitable<std::optional<ClusterPool::Lease>> ClusterPool::wait_turn(
    EndpointState& ep, std::chrono::steady_clock::time_point deadline, ConnectWait* wait) {
  Lease lease;
  if (pending_ >= max_pending_) {
    lease.overflow = Overflow::MaxPendingRequests;
    co_return lease;
  }
  const std::shared_ptr<EndpointSlots> slots = ep.slots;
  EndpointSlots::Waiter w(ex_);
  w.timer.expires_at(deadline);
  slots->waiters.push_back(&w);
  ++pending_;
  if (wait != nullptr) wait->waiter = &w;
  struct Leave {  // out of the queue however the wait ends (the frame may be destroyed)
    EndpointSlots& slots;
    EndpointSlots::Waiter& w;
    ClusterPool& pool;
    ConnectWait* wait;
    ~Leave() {
      if (!w.woken) std::erase(slots.waiters, &w);
      --pool.pending_;
      if (wait != nullptr) wait->waiter = nullptr;
    }
  } leave{*slots, w, *this, wait};
  co_await w.timer.async_wait(asio::as_tuple(asio::use_awaitable));
  if (wait != nullptr && wait->cancelled) {
    if (w.conn)
      release(ep, std::move(w.conn));
    else if (w.woken)
      slots->wake(nullptr);
    lease.ec = asio::error::operation_aborted;
    co_return lease;
  }
  if (!w.woken) {
    lease.overflow = Overflow::MaxConnections;
    co_return lease;
  }
  if (!w.conn) co_return std::nullopt;
  lease.conn = std::move(w.conn);
  lease.reused = true;
  co_return lease;
}

asio::awaitable<ClusterPool::Lease> ClusterPool::connect(EndpointState& ep, ConnectWait* wait) {
  Lease lease;
  if (wait != nullptr && wait->cancelled) {
    lease.ec = asio::error::operation_aborted;
    co_return lease;
  }
  // One deadline for the whole wait, however many turns it takes.
  const auto deadline = std::chrono::steady_clock::now() + config_->connect_timeout;
  if (h2_) {
    // Every connection to the endpoint is full and no other may be opened (max_connections):
    // wait for a stream to end or a connection to close, in the same queue.
    for (;;) {
      lease = take(ep, true, false);
      if (lease.conn || lease.overflow != Overflow::None) co_return lease;
      std::optional<Lease> answer = co_await wait_turn(ep, deadline, wait);
      if (answer) co_return std::move(*answer);
    }
  }
  // At max_connections: wait for one of this worker's connections to the endpoint to be
  // released (it is handed over) or closed (a slot frees). A worker with none of its own opens
  // one anyway, so that it is never left waiting on connections held by the other workers.
  while (ep.slots->open >= max_connections_ && ep.slots->open > 0) {
    std::optional<Lease> answer = co_await wait_turn(ep, deadline, wait);
    if (answer) co_return std::move(*answer);
  }
  const std::shared_ptr<tls::ClientContext> tls = tls_;  // (a reload may rebind tls_ meanwhile)
  Connection c = co_await upstream::connect(ep.endpoint, config_->connect_timeout, tls.get(),
                                            ep.tls_name, false, ep.label);
  if (c.ec) {
    lease.ec = c.ec;
    co_return lease;
  }
  auto conn = c.tls ? make_connection<http1::ClientConnection>(ep, std::move(c.tls))
                    : make_connection<http1::ClientConnection>(ep, std::move(c.socket));
  conn->init();
  lease.conn = std::move(conn);
  co_return lease;
}

asio::awaitable<ClusterPool::Lease> ClusterPool::acquire(EndpointState& ep, bool allow_reuse,
                                                         bool probe) {
  Lease lease = take(ep, allow_reuse, probe);
  if (!lease.conn && lease.overflow == Overflow::None) lease = co_await connect(ep);
  co_return lease;
}

void ClusterPool::release(EndpointState& ep, std::shared_ptr<http::ClientStream> stream) noexcept {
  if (h2_) return;  // the stream ends here; its connection stays with the others
  auto conn = std::static_pointer_cast<http1::ClientConnection>(std::move(stream));
  const bool reusable = conn->reusable();
  // A request waiting for a connection (max_connections) takes it at once.
  if (reusable && !ep.slots->waiters.empty()) {
    ep.slots->wake(std::move(conn));
    return;
  }
  if (!reusable || ep.idle.size() >= config_->max_idle_per_endpoint) {
    conn->close();
    return;
  }
  conn->mark_idle();
  ep.idle.push_back(std::move(conn));
}

void ClusterPool::sweep(std::chrono::steady_clock::time_point now) noexcept {
  const bool probe = now - last_probe_ >= kProbeAfter;
  if (probe) last_probe_ = now;
  for (auto& ep : endpoints_) {
    std::erase_if(ep.h2, [&](const std::shared_ptr<http2::ClientConnection>& c) {
      if (c->active_streams() == 0 && now - c->idle_since() >= config_->idle_timeout) c->close();
      return c->is_closed();
    });
    std::erase_if(ep.idle, [&](const std::shared_ptr<http1::ClientConnection>& c) {
      if (now - c->idle_since() >= config_->idle_timeout || (probe && !c->still_alive())) {
        c->close();
        return true;
      }
      return false;
    });
  }
}

void ClusterPool::close_idle() noexcept {
  for (auto& ep : endpoints_) {
    for (auto& c : ep.h2)
      c->shutdown();  // closes now if idle, else once its streams are done
    ep.h2.clear();
    for (auto& c : ep.idle)
      c->close();
    ep.idle.clear();
  }
}

std::size_t ClusterPool::idle_count() const noexcept {
  std::size_t n = 0;
  for (const auto& ep : endpoints_) {
    n += ep.idle.size();
    for (const auto& c : ep.h2)
      n += c->active_streams() == 0 ? 1 : 0;
  }
  return n;
}

}  // namespace turnpike::upstream
