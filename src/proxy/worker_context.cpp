#include "proxy/worker_context.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <unordered_set>

namespace turnpike::proxy {

namespace {
// Identity of a cluster definition: pools survive a snapshot change only if it is unchanged.
// The endpoints come last, after '#': a pool whose key differs only there (a DNS answer
// changed) hands its connections to kept endpoints over to the new pool (ClusterPool::adopt).
std::string pool_key(const config::Cluster& c, const config::Config& cfg) {
  std::string k = c.name;
  k += '|';
  k += c.lb_policy;  // the balancer is built with the pool
  if (c.tls) {       // the settings and the content of the files they name
    k += "|tls";
    for (const std::string* f : {&c.tls->ca, &c.tls->cert, &c.tls->key}) {
      k += '|';
      k += *f;
      if (auto it = cfg.file_digests.find(*f); it != cfg.file_digests.end()) k += it->second;
    }
    k += '|';
    k += c.tls->server_name;
    k += c.tls->verify ? "|v" : "|nv";
  }
  k += '|';
  k += c.protocol;
  k += '|';
  k += std::to_string(c.http2.max_concurrent_streams);
  k += '|';
  k += std::to_string(c.http2.initial_window_size);
  k += '|';
  k += std::to_string(c.http2.connection_window_size);
  k += '|';
  k += std::to_string(c.connect_timeout.count());
  k += '|';
  k += std::to_string(c.idle_timeout.count());
  k += '|';
  k += std::to_string(c.max_idle_per_endpoint);
  k += '#';
  for (const auto& e : c.endpoints) {
    k += '|';
    k += e.address;
    k += ':';
    k += std::to_string(e.port);
    k += '*';
    k += std::to_string(e.weight);
  }
  return k;
}
}  // namespace

SnapshotRef::~SnapshotRef() {
  if (ws_ && --ws_->pins == 0 && !ws_->current) ctx_->unpinned(ws_);
}

WorkerContext::WorkerContext(boost::asio::any_io_executor ex, unsigned index,
                             observability::AccessLogSink* log_sink, unsigned workers)
    : ex_(std::move(ex)),
      index_(index),
      workers_(workers),
      rng_(std::random_device{}()),
      log_(log_sink) {}

WorkerContext::~WorkerContext() {
  log_.flush();
  for (auto& [k, p] : pools_)
    p->close_idle();
  for (auto& p : retired_)
    p->close_idle();
}

void WorkerContext::set_snapshot(SnapshotPtr snap) {
  auto ws = std::make_unique<WorkerSnapshot>();
  ws->shared = std::move(snap);
  ws->current = true;
  std::unordered_map<std::string, std::unique_ptr<upstream::ClusterPool>> next;
  const auto& clusters = ws->shared->config.clusters;
  for (std::size_t i = 0; i < clusters.size(); ++i) {
    const auto& c = clusters[i];
    const auto& tls = ws->shared->cluster_tls[i];
    std::string key = pool_key(c, ws->shared->config);
    auto it = pools_.find(key);
    std::unique_ptr<upstream::ClusterPool> pool;
    if (it != pools_.end()) {
      pool = std::move(it->second);
      pools_.erase(it);
      pool->rebind(c, tls, ws->shared->cluster_hosts[i]);
    } else {
      pool = std::make_unique<upstream::ClusterPool>(c, ex_, tls, ws->shared->cluster_hosts[i],
                                                     workers_);
      const std::string_view settings(key.data(), key.rfind('#') + 1);
      for (auto& [k, p] : pools_)
        if (k.starts_with(settings)) {
          pool->adopt(*p);
          break;
        }
    }
    ws->pools.push_back(pool.get());
    next.emplace(std::move(key), std::move(pool));
  }
  // Pools of removed or changed clusters: close their idle connections now. Requests still
  // pinned to an older snapshot may be using them, so they are retired, and freed once no live
  // snapshot refers to them.
  for (auto& [k, p] : pools_) {
    p->close_idle();
    retired_.push_back(std::move(p));
  }
  pools_ = std::move(next);

  WorkerSnapshot* old = current_;
  current_ = ws.get();
  live_.push_back(std::move(ws));
  if (old) {
    old->current = false;
    if (old->pins == 0) unpinned(old);
  }
  publish_generation_use();
  publish_endpoint_use();
}

std::size_t WorkerContext::close_generations(const std::vector<std::uint64_t>& generations) {
  std::vector<PinnedStream*> doomed;
  for (const auto& ws : live_) {
    if (ws->current || std::find(generations.begin(), generations.end(), ws->shared->generation) ==
                           generations.end())
      continue;
    for (PinnedStream& s : ws->streams)
      doomed.push_back(&s);
  }
  // Closing only cancels I/O: the requests finish (and unlink) when their coroutines resume.
  for (PinnedStream* s : doomed)
    s->close_for_generation();
  return doomed.size();
}

void WorkerContext::publish_generation_use() {
  std::vector<GenerationUse> use;
  use.reserve(live_.size());
  std::unordered_set<const void*> conns;
  for (const auto& ws : live_) {
    GenerationUse u;
    u.generation = ws->shared->generation;
    u.requests = ws->pins;
    conns.clear();
    for (const PinnedStream& s : ws->streams)
      conns.insert(s.connection_id());
    u.connections = static_cast<std::uint32_t>(conns.size());
    use.push_back(u);
  }
  std::lock_guard lock(use_mutex_);
  use_ = std::move(use);
}

std::vector<GenerationUse> WorkerContext::generation_use() const {
  std::lock_guard lock(use_mutex_);
  return use_;
}

void WorkerContext::unpinned(WorkerSnapshot* ws) noexcept {
  std::erase_if(live_, [ws](const std::unique_ptr<WorkerSnapshot>& p) { return p.get() == ws; });
  collect_retired();
}

void WorkerContext::collect_retired() noexcept {
  std::erase_if(retired_, [this](const std::unique_ptr<upstream::ClusterPool>& pool) {
    for (const auto& ws : live_)
      for (const upstream::ClusterPool* p : ws->pools)
        if (p == pool.get()) return false;
    pool->close_idle();
    return true;
  });
}

namespace {
// Two hex digits per byte value, so a request id takes 16 table lookups.
constexpr std::array<std::array<char, 2>, 256> kHexPairs = [] {
  constexpr char kHex[] = "0123456789abcdef";
  std::array<std::array<char, 2>, 256> t{};
  for (std::size_t i = 0; i < 256; ++i)
    t[i] = {kHex[i >> 4], kHex[i & 0xf]};
  return t;
}();
// Where each of the 16 bytes goes in "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
constexpr std::array<std::uint8_t, 16> kUuidOffsets = {0,  2,  4,  6,  9,  11, 14, 16,
                                                       19, 21, 24, 26, 28, 30, 32, 34};
}  // namespace

void WorkerContext::next_request_id(char* out) noexcept {
  // UUID v4 text form, formatted by hand: this runs once per request.
  std::uint64_t a = rng_();
  std::uint64_t b = rng_();
  a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
  for (int i = 0; i < 8; ++i) {
    std::memcpy(out + kUuidOffsets[i], kHexPairs[(a >> (56 - 8 * i)) & 0xff].data(), 2);
    std::memcpy(out + kUuidOffsets[8 + i], kHexPairs[(b >> (56 - 8 * i)) & 0xff].data(), 2);
  }
  out[8] = out[13] = out[18] = out[23] = '-';
}

void WorkerContext::sweep() {
  const auto now = std::chrono::steady_clock::now();
  for (auto& [k, p] : pools_)
    p->sweep(now);
  log_.flush();
  publish_generation_use();
  if (++sweeps_ % 5 == 0) publish_endpoint_use();  // every second
}

void WorkerContext::publish_endpoint_use() {
  std::vector<upstream::EndpointUse> use;
  if (current_)
    for (const upstream::ClusterPool* p : current_->pools)
      p->usage(use);
  std::lock_guard lock(use_mutex_);
  endpoint_use_ = std::move(use);
}

std::vector<upstream::EndpointUse> WorkerContext::endpoint_use() const {
  std::lock_guard lock(use_mutex_);
  return endpoint_use_;
}

void WorkerContext::close_idle_upstreams() {
  for (auto& [k, p] : pools_)
    p->close_idle();
  for (auto& p : retired_)
    p->close_idle();
}

}  // namespace turnpike::proxy
