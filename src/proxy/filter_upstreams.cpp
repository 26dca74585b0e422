#include "proxy/filter_upstreams.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>

namespace turnpike::proxy {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

asio::awaitable<filters::FetchResult> get(WorkerContext& ctx, std::string cluster,
                                          std::string target, std::string host,
                                          std::chrono::milliseconds timeout,
                                          std::size_t max_bytes) {
  filters::FetchResult r;
  SnapshotRef snap = ctx.pin();
  const auto& clusters = snap->config.clusters;
  std::size_t ci = 0;
  while (ci < clusters.size() && clusters[ci].name != cluster)
    ++ci;
  if (ci == clusters.size()) {
    r.error = "no cluster '" + cluster + "'";
    co_return r;
  }
  const auto deadline = Clock::now() + timeout;
  auto left = [&] {
    return std::max(std::chrono::milliseconds(1),
                    std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
  };
  upstream::ClusterPool& pool = snap.pool(static_cast<std::uint32_t>(ci));
  if (pool.none_usable(Clock::now())) {
    r.error = "no healthy upstream in cluster '" + cluster + "'";
    co_return r;
  }
  upstream::EndpointState& ep = pool.pick();
  auto lease = co_await pool.acquire(ep, true);
  if (lease.ec) {
    r.error = "cannot connect to " + ep.label + ": " + lease.ec.message();
    co_return r;
  }
  http::RequestHead req;
  req.method = "GET";
  req.target = target;
  req.host = host.empty() ? ep.label : host;
  req.authority = req.host;
  req.headers.add("Host", req.host);
  req.headers.add("Accept", "application/json");
  req.headers.add("User-Agent", "turnpike");
  req.has_body = false;
  auto conn = std::move(lease.conn);
  http::ResponseHead resp;
  auto ec = co_await conn->send_request(req, target, std::span<const char>(), true, left());
  if (!ec) ec = co_await conn->read_response_head(resp, false, left());
  if (ec) {
    conn->close();
    r.error =
        ec == asio::error::timed_out ? "upstream timed out" : "upstream failed: " + ec.message();
    co_return r;
  }
  char buf[16 * 1024];
  http::BodyRead chunk = conn->read_buffered_body({buf, sizeof buf});
  for (;;) {
    if (chunk.ec) {
      ec = chunk.ec;
      break;
    }
    if (r.body.size() + chunk.bytes > max_bytes) {
      r.error = "response larger than " + std::to_string(max_bytes) + " bytes";
      break;
    }
    r.body.append(buf, chunk.bytes);
    if (chunk.last) break;
    chunk = co_await conn->read_body(std::span<char>(buf), left());
  }
  if (ec || !r.error.empty() || !chunk.last) {
    conn->close();
    if (r.error.empty())
      r.error =
          ec == asio::error::timed_out ? "upstream timed out" : "upstream failed: " + ec.message();
    r.body.clear();
    co_return r;
  }
  pool.release(ep, std::move(conn));
  r.status = resp.status;
  for (const auto& h : resp.headers) {
    std::string name = h.name;
    for (char& c : name)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    r.headers.emplace_back(std::move(name), h.value);
  }
  co_return r;
}

}  // namespace

void FilterUpstreams::fetch(std::string_view cluster, std::string path_and_query, std::string host,
                            std::chrono::milliseconds timeout, std::size_t max_bytes,
                            std::function<void(filters::FetchResult)> done) {
  asio::co_spawn(ctx_.executor(),
                 get(ctx_, std::string(cluster), std::move(path_and_query), std::move(host),
                     timeout, max_bytes),
                 [done = std::move(done)](std::exception_ptr e, filters::FetchResult r) {
                   if (e) {
                     r = {};
                     r.error = "internal error";
                   }
                   done(std::move(r));
                 });
}

}  // namespace turnpike::proxy
