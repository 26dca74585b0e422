#include "upstream/health_check.h"

#include <pthread.h>

#include <algorithm>
#include <map>
#include <random>
#include <thread>
#include <utility>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "http1/client_connection.h"
#include "http2/client_connection.h"
#include "support/spawn.h"
#include "upstream/connector.h"

namespace turnpike::upstream {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
// A gRPC health answer is a few bytes; anything larger is not one.
constexpr std::size_t kMaxGrpcBody = 64 * 1024;

const char* grpc_serving_name(std::uint64_t status) {
  switch (status) {
    case 0:
      return "UNKNOWN";
    case 1:
      return "SERVING";
    case 2:
      return "NOT_SERVING";
    case 3:
      return "SERVICE_UNKNOWN";
    default:
      return "an unknown status";
  }
}

// grpc.health.v1.HealthCheckRequest {string service = 1;} in one gRPC message frame.
std::string grpc_request(const std::string& service) {
  std::string msg;
  if (!service.empty()) {
    msg += '\x0a';
    std::size_t n = service.size();
    while (n >= 0x80) {
      msg += static_cast<char>((n & 0x7f) | 0x80);
      n >>= 7;
    }
    msg += static_cast<char>(n);
    msg += service;
  }
  std::string frame(5, '\0');
  const auto len = static_cast<std::uint32_t>(msg.size());
  frame[1] = static_cast<char>(len >> 24);
  frame[2] = static_cast<char>(len >> 16);
  frame[3] = static_cast<char>(len >> 8);
  frame[4] = static_cast<char>(len);
  return frame + msg;
}

bool read_varint(std::string_view& in, std::uint64_t& out) {
  out = 0;
  for (int shift = 0; shift < 64 && !in.empty(); shift += 7) {
    const auto b = static_cast<unsigned char>(in.front());
    in.remove_prefix(1);
    out |= std::uint64_t{b & 0x7fu} << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

// The `status` (field 1) of a grpc.health.v1.HealthCheckResponse in one gRPC message frame;
// nullopt when the body is not one.
std::optional<std::uint64_t> grpc_response_status(std::string_view body) {
  if (body.size() < 5 || body[0] != 0) return std::nullopt;  // compressed: not expected
  const std::uint32_t len = (std::uint32_t{static_cast<unsigned char>(body[1])} << 24) |
                            (std::uint32_t{static_cast<unsigned char>(body[2])} << 16) |
                            (std::uint32_t{static_cast<unsigned char>(body[3])} << 8) |
                            std::uint32_t{static_cast<unsigned char>(body[4])};
  std::string_view msg = body.substr(5);
  if (msg.size() != len) return std::nullopt;
  std::uint64_t status = 0;  // proto3: an absent field is 0 (UNKNOWN)
  while (!msg.empty()) {
    std::uint64_t tag = 0;
    if (!read_varint(msg, tag)) return std::nullopt;
    const auto wire = tag & 7;
    if (wire == 0) {
      std::uint64_t v = 0;
      if (!read_varint(msg, v)) return std::nullopt;
      if ((tag >> 3) == 1) status = v;
    } else if (wire == 2) {
      std::uint64_t n = 0;
      if (!read_varint(msg, n) || n > msg.size()) return std::nullopt;
      msg.remove_prefix(n);
    } else if (wire == 1 || wire == 5) {
      const std::size_t n = wire == 1 ? 8 : 4;
      if (msg.size() < n) return std::nullopt;
      msg.remove_prefix(n);
    } else {
      return std::nullopt;
    }
  }
  return status;
}

std::string statuses_text(const config::HealthCheck& c) {
  std::string s;
  for (const auto& [lo, hi] : c.expected_statuses) {
    if (!s.empty()) s += ", ";
    s += lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi);
  }
  return s;
}

// The HTTP or gRPC exchange of a check on `stream`, within `deadline`.
asio::awaitable<std::string> exchange(const HealthTarget& t, http::ClientStream& stream,
                                      Clock::time_point deadline) {
  auto left = [&] {
    return std::max(milliseconds(1),
                    std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
  };
  const bool grpc = t.check.kind == config::HealthCheck::Kind::Grpc;
  http::RequestHead head;
  head.method = grpc ? "POST" : "GET";
  head.path = grpc ? "/grpc.health.v1.Health/Check" : t.check.path;
  head.authority = t.authority;
  head.host = t.authority;
  head.headers.add("host", t.authority);
  head.headers.add("user-agent", "turnpike-health-check");
  std::string body;
  if (grpc) {
    body = grpc_request(t.check.service);
    head.headers.add("content-type", "application/grpc");
    head.headers.add("te", "trailers");
    head.content_length = body.size();
    head.has_body = true;
  } else if (!t.h2) {
    head.headers.add("connection", "close");
  }
  boost::system::error_code ec =
      co_await stream.send_request(head, head.path, std::span<const char>(body), true, left());
  if (ec) co_return "request: " + ec.message();
  http::ResponseHead resp;
  ec = co_await stream.read_response_head(resp, false, left());
  if (ec) co_return "response: " + (ec == asio::error::timed_out ? "timed out" : ec.message());
  if (!grpc) {
    for (const auto& [lo, hi] : t.check.expected_statuses)
      if (resp.status >= lo && resp.status <= hi) co_return std::string();
    co_return "status " + std::to_string(resp.status) + " (expected " + statuses_text(t.check) +
        ")";
  }
  if (resp.status != 200) co_return "grpc: HTTP status " + std::to_string(resp.status);
  std::string answer;
  if (resp.has_body) {
    char buf[4096];
    for (;;) {
      http::BodyRead r = stream.read_buffered_body(std::span<char>(buf, sizeof buf));
      if (r.bytes == 0 && !r.last && !r.ec)
        r = co_await stream.read_body(std::span<char>(buf, sizeof buf), left());
      if (r.ec) co_return "grpc: response body: " + r.ec.message();
      answer.append(buf, r.bytes);
      if (answer.size() > kMaxGrpcBody) co_return "grpc: response too large";
      if (r.last) break;
    }
  }
  const std::string* status = resp.headers.get("grpc-status");  // trailers-only answer
  if (status == nullptr && stream.trailers() != nullptr)
    status = stream.trailers()->get("grpc-status");
  if (status == nullptr) co_return "grpc: no grpc-status";
  if (*status != "0") {
    const std::string* message = resp.headers.get("grpc-message");
    if (message == nullptr && stream.trailers() != nullptr)
      message = stream.trailers()->get("grpc-message");
    co_return "grpc-status " + *status + (message ? " (" + *message + ")" : std::string());
  }
  const auto serving = grpc_response_status(answer);
  if (!serving) co_return "grpc: not a HealthCheckResponse";
  if (*serving != 1) co_return std::string("grpc: ") + grpc_serving_name(*serving);
  co_return std::string();
}

}  // namespace

std::vector<HealthTarget> health_targets(const config::Cluster& cluster, const ClusterHosts& hosts,
                                         const std::shared_ptr<tls::ClientContext>& tls) {
  std::vector<HealthTarget> out;
  const config::HealthCheck& hc = cluster.health_check;
  if (hc.kind == config::HealthCheck::Kind::None || hosts.hosts.size() != cluster.endpoints.size())
    return out;
  // The check's definition, as part of each loop's identity.
  std::string def =
      std::to_string(static_cast<int>(hc.kind)) + '|' + hc.path + '|' + hc.host + '|' + hc.service +
      '|' + std::to_string(hc.interval.count()) + '|' + std::to_string(hc.timeout.count()) + '|' +
      std::to_string(hc.unhealthy_threshold) + '|' + std::to_string(hc.healthy_threshold) + '|' +
      cluster.protocol + '|' + std::to_string(cluster.connect_timeout.count());
  if (hc.unhealthy_interval) def += "|ui" + std::to_string(hc.unhealthy_interval->count());
  for (const auto& [lo, hi] : hc.expected_statuses)
    def += '|' + std::to_string(lo) + '-' + std::to_string(hi);
  if (cluster.tls)
    def += "|tls|" + cluster.tls->server_name + '|' + cluster.tls->ca + '|' + cluster.tls->cert +
           (cluster.tls->verify ? "|v" : "|nv");
  for (std::size_t i = 0; i < cluster.endpoints.size(); ++i) {
    const config::Endpoint& e = cluster.endpoints[i];
    HealthTarget t;
    t.cluster = cluster.name;
    t.label = endpoint_label(e);
    t.key = cluster.name + '|' + t.label + '|' + def;
    t.endpoint = asio::ip::tcp::endpoint(asio::ip::make_address(e.address), e.port);
    t.tls_name = endpoint_tls_name(cluster, e);
    t.authority = hc.host.empty() ? endpoint_host(e) : hc.host;
    if (hc.host.empty() && e.port != (cluster.tls ? 443 : 80)) {
      const bool v6 = t.authority.find(':') != std::string::npos;
      t.authority = (v6 ? "[" + t.authority + "]" : t.authority) + ':' + std::to_string(e.port);
    }
    t.h2 = cluster.protocol != "http1";
    t.check = hc;
    t.http2 = cluster.http2;
    t.tls = tls;
    t.host = hosts.hosts[i];
    t.health = hosts.health;
    out.push_back(std::move(t));
  }
  return out;
}

asio::awaitable<std::string> check_once(const HealthTarget& t) {
  const Clock::time_point deadline = Clock::now() + t.check.timeout;
  const bool tcp_only = t.check.kind == config::HealthCheck::Kind::Tcp;
  // A tcp check is the TCP connect alone, TLS cluster or not.
  Connection c = co_await connect(t.endpoint, t.check.timeout, tcp_only ? nullptr : t.tls.get(),
                                  t.tls_name, t.h2, t.label, true);
  if (c.ec) co_return "connect: " + (c.ec == asio::error::timed_out ? "timed out" : c.ec.message());
  if (tcp_only) {
    boost::system::error_code ignored;
    c.socket.close(ignored);
    co_return std::string();
  }
  const auto ex = co_await asio::this_coro::executor;
  if (t.h2) {
    http2::ClientSettings settings;
    settings.max_concurrent_streams = 1;
    settings.initial_window_size = t.http2.initial_window_size;
    settings.connection_window_size = t.http2.connection_window_size;
    auto conn = std::make_shared<http2::ClientConnection>(ex, settings, t.label);
    if (c.tls)
      conn->start(std::move(c.tls));
    else
      conn->start(std::move(c.socket));
    std::shared_ptr<http::ClientStream> stream = conn->open_stream();
    std::string why = co_await exchange(t, *stream, deadline);
    stream->close();
    stream.reset();
    conn->close();
    co_return why;
  }
  auto conn = c.tls ? std::make_shared<http1::ClientConnection>(std::move(c.tls))
                    : std::make_shared<http1::ClientConnection>(std::move(c.socket));
  conn->init();
  std::string why = co_await exchange(t, *conn, deadline);
  conn->close();
  co_return why;
}

struct HealthChecker::Impl {
  struct Loop {
    HealthTarget target;
    asio::steady_timer timer;
    bool stopped = false;
    std::uint32_t passes = 0;  // in a row
    std::uint32_t fails = 0;   // in a row
    std::minstd_rand rng;
    Loop(HealthTarget t, const asio::any_io_executor& ex)
        : target(std::move(t)),
          timer(ex),
          rng(static_cast<std::uint32_t>(Clock::now().time_since_epoch().count()) ^
              static_cast<std::uint32_t>(std::hash<std::string>{}(target.key))) {}
  };

  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  std::map<std::string, std::shared_ptr<Loop>> loops;  // checker thread only
  std::thread thread;

  Clock::duration jitter(Loop& l, Clock::duration up_to) {
    const auto ms = std::chrono::duration_cast<milliseconds>(up_to).count();
    if (ms <= 0) return Clock::duration::zero();
    return milliseconds(std::uniform_int_distribution<std::int64_t>(0, ms)(l.rng));
  }

  void record(Loop& l, const std::string& why) {
    const HealthTarget& t = l.target;
    HostState& h = *t.host;
    h.checks.fetch_add(1, std::memory_order_relaxed);
    const bool unhealthy = h.unhealthy.load(std::memory_order_relaxed);
    if (why.empty()) {
      l.fails = 0;
      ++l.passes;
      h.check_failures.store(0, std::memory_order_relaxed);
      if (unhealthy && l.passes >= t.check.healthy_threshold) {
        h.unhealthy.store(false, std::memory_order_relaxed);
        // An endpoint the checks saw recover leaves an outlier ejection early (Envoy's
        // successful_active_health_check_uneject_host): it failed, and now it answers.
        std::int64_t until = h.ejected_until.load(std::memory_order_relaxed);
        const bool unejected = until != 0 && h.ejected_until.compare_exchange_strong(
                                                 until, 0, std::memory_order_relaxed);
        t.health->version.fetch_add(1, std::memory_order_relaxed);
        spdlog::info("cluster '{}': endpoint {} healthy again ({} health checks passed in a row){}",
                     t.cluster, t.label, l.passes, unejected ? "; its ejection ends now" : "");
      }
      return;
    }
    l.passes = 0;
    ++l.fails;
    h.check_failures.store(l.fails, std::memory_order_relaxed);
    if (!unhealthy && l.fails >= t.check.unhealthy_threshold) {
      h.unhealthy.store(true, std::memory_order_relaxed);
      t.health->version.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn(
          "cluster '{}': endpoint {} unhealthy: {} health checks failed in a row (last: {})",
          t.cluster, t.label, l.fails, why);
    } else {
      spdlog::debug("cluster '{}': endpoint {} health check failed: {}", t.cluster, t.label, why);
    }
  }

  asio::awaitable<void> run(std::shared_ptr<Loop> l) {
    // The first check soon, spread so that many endpoints are not checked in one burst.
    l->timer.expires_after(jitter(
        *l, std::min<Clock::duration>(l->target.check.interval / 10, std::chrono::seconds(1))));
    for (;;) {
      co_await l->timer.async_wait(kAwait);
      if (l->stopped) co_return;
      // A copy: a reload may hand the loop a new target (TLS context) while the check runs.
      const HealthTarget target = l->target;
      const std::string why = co_await check_once(target);
      if (l->stopped) co_return;
      record(*l, why);
      const config::HealthCheck& hc = l->target.check;
      const auto interval =
          hc.unhealthy_interval && l->target.host->unhealthy.load(std::memory_order_relaxed)
              ? *hc.unhealthy_interval
              : hc.interval;
      l->timer.expires_after(interval + jitter(*l, interval / 10));
    }
  }

  void apply(std::vector<HealthTarget> targets) {
    std::map<std::string, std::shared_ptr<Loop>> next;
    for (auto& t : targets) {
      auto it = loops.find(t.key);
      if (it != loops.end()) {
        it->second->target = std::move(t);  // the same check; a fresh TLS context
        next.emplace(it->first, std::move(it->second));
        loops.erase(it);
        continue;
      }
      const std::string key = t.key;
      auto l = std::make_shared<Loop>(std::move(t), io.get_executor());
      l->target.host->checked.store(true, std::memory_order_relaxed);
      asio::co_spawn(io, run(l), support::log_exception("health check loop"));
      next.emplace(key, std::move(l));
    }
    // Loops no longer wanted stop; an endpoint left with no check at all is healthy.
    for (auto& [key, l] : loops) {
      l->stopped = true;
      l->timer.cancel();
      const bool still_checked = std::any_of(next.begin(), next.end(), [&](const auto& kv) {
        return kv.second->target.host == l->target.host;
      });
      if (still_checked) continue;
      HostState& h = *l->target.host;
      h.checked.store(false, std::memory_order_relaxed);
      h.check_failures.store(0, std::memory_order_relaxed);
      if (h.unhealthy.exchange(false, std::memory_order_relaxed))
        l->target.health->version.fetch_add(1, std::memory_order_relaxed);
    }
    loops = std::move(next);
  }
};

HealthChecker::HealthChecker() : impl_(std::make_unique<Impl>()) {
  impl_->thread = std::thread([impl = impl_.get()] {
    pthread_setname_np(pthread_self(), "tp-health");
    impl->io.run();
  });
}

HealthChecker::~HealthChecker() {
  // Checks in flight are abandoned (the io_context's destruction closes their sockets).
  asio::post(impl_->io, [impl = impl_.get()] {
    impl->apply({});
    impl->io.stop();
  });
  impl_->thread.join();
}

void HealthChecker::update(std::vector<HealthTarget> targets) {
  asio::post(impl_->io,
             [impl = impl_.get(), t = std::move(targets)]() mutable { impl->apply(std::move(t)); });
}

}  // namespace turnpike::upstream
