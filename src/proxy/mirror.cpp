#include "proxy/mirror.h"

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>

#include "support/spawn.h"
#include "upstream/cluster_pool.h"

namespace turnpike::proxy {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

// A response body read and dropped up to this much; a longer one closes the connection
// instead (reading it would cost more than a new connection).
constexpr std::size_t kDrainLimit = 256 * 1024;

asio::awaitable<void> mirror(SnapshotRef snap, std::uint32_t cluster_index, http::RequestHead head,
                             std::string target, std::string body,
                             std::chrono::milliseconds timeout) {
  upstream::ClusterPool& pool = snap.pool(cluster_index);
  const auto now = std::chrono::steady_clock::now();
  if (pool.none_usable(now) || !pool.admits_request()) co_return;  // never at any cost
  upstream::EndpointState& ep = pool.pick(std::nullopt, nullptr, now);
  pool.request_started(ep);
  struct End {
    upstream::ClusterPool& pool;
    upstream::EndpointState& ep;
    ~End() { pool.request_ended(ep); }
  } end{pool, ep};
  upstream::ClusterPool::Lease lease = pool.take(ep, true, false);
  if (lease.overflow != upstream::Overflow::None) co_return;
  if (!lease.conn) lease = co_await pool.connect(ep);
  if (!lease.conn) {
    if (lease.ec) pool.report(ep, upstream::Outcome::GatewayFailure, "mirror: connect failed");
    co_return;
  }
  std::shared_ptr<http::ClientStream> conn = std::move(lease.conn);
  error_code ec =
      co_await conn->send_request(head, target, std::span<const char>(body), true, timeout);
  http::ResponseHead resp;
  if (!ec) ec = co_await conn->read_response_head(resp, head.method == "HEAD", timeout);
  if (ec) {
    spdlog::debug("mirror to {}: {}", ep.label, ec.message());
    if (!lease.reused) pool.report(ep, upstream::Outcome::GatewayFailure, "mirror: no answer");
    conn->close();
    co_return;
  }
  pool.report(ep, resp.status >= 500 ? upstream::Outcome::Status5xx : upstream::Outcome::Success,
              "status 5xx from the backend (mirror)");
  // The answer is dropped: read to its end when it is short, so the connection can be pooled.
  bool complete = !resp.has_body;
  if (!complete) {
    char buf[16 * 1024];
    std::size_t total = 0;
    while (total <= kDrainLimit) {
      http::BodyRead r = conn->read_buffered_body(std::span<char>(buf, sizeof buf));
      if (r.bytes == 0 && !r.last && !r.ec)
        r = co_await conn->read_body(std::span<char>(buf, sizeof buf), timeout);
      if (r.ec) break;
      total += r.bytes;
      if (r.last) {
        complete = true;
        break;
      }
    }
  }
  if (complete)
    pool.release(ep, std::move(conn));
  else
    conn->close();
}

}  // namespace

void start_mirror(RequestState& x, std::uint32_t cluster_index, std::string target,
                  std::span<const char> body, std::chrono::milliseconds timeout) {
  http::RequestHead head = x.req;  // a copy: the real request goes on meanwhile
  std::string host = head.authority.empty() ? head.host : head.authority;
  host += "-shadow";
  head.headers.set("Host", host);
  head.authority = host;
  head.content_length = body.size();
  head.has_body = !body.empty();
  head.expect_continue = false;
  head.headers.remove("expect");
  asio::co_spawn(x.ctx.executor(),
                 mirror(x.snap.again(), cluster_index, std::move(head), std::move(target),
                        std::string(body.data(), body.size()), timeout),
                 support::log_exception("mirror"));
}

}  // namespace turnpike::proxy
