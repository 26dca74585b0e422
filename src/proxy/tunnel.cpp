#include "proxy/tunnel.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "support/task_group.h"

namespace turnpike::proxy {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

struct Tunnel {
  explicit Tunnel(const asio::any_io_executor& ex) : wake(ex) {}
  asio::steady_timer wake;
  Clock::time_point last = Clock::now();  // bytes moved either way
  Clock::time_point half_closed{};        // one direction ended cleanly
  int running = 2;
  bool failed = false;
};

// No deadline of their own: the tunnel's idle timeout is watched in tunnel().
constexpr std::chrono::milliseconds kTunnelReadTimeout = std::chrono::hours(24);
// After one side closed its direction, how long the other may still talk.
constexpr std::chrono::milliseconds kTunnelLinger = std::chrono::seconds(5);

// The two directions of a tunnel: where bytes come from and where they go.
struct ToClient {
  http::ClientStream& from;
  http::ServerStream& to;
  asio::awaitable<http::BodyRead> read(std::span<char> out) {
    return from.read_body(out, kTunnelReadTimeout);
  }
  asio::awaitable<boost::system::error_code> write(std::span<const char> in, bool last) {
    return to.send_body(in, last);
  }
};

struct ToUpstream {
  http::ServerStream& from;
  http::ClientStream& to;
  asio::awaitable<http::BodyRead> read(std::span<char> out) {
    return from.read_body(out, kTunnelReadTimeout);
  }
  asio::awaitable<boost::system::error_code> write(std::span<const char> in, bool last) {
    return to.send_body(in, last, kTunnelReadTimeout);
  }
};

// Moves one direction's bytes until it ends (a half-close, passed on) or fails.
template <class Direction>
asio::awaitable<void> pump(Direction dir, char* buf, Tunnel& t) {
  const std::span<char> span(buf, BufferPool::kSize);
  for (;;) {
    const http::BodyRead r = co_await dir.read(span);
    if (r.ec) {
      t.failed = true;
      break;
    }
    if (r.bytes) t.last = Clock::now();
    const auto ec = co_await dir.write(span.first(r.bytes), r.last);
    if (ec) {
      t.failed = true;
      break;
    }
    if (r.last) {
      t.half_closed = Clock::now();
      break;
    }
  }
  --t.running;
  t.wake.cancel();
}

}  // namespace

asio::awaitable<void> tunnel(http::ServerStream& s, http::ClientStream& up,
                             std::chrono::milliseconds idle, BufferPool& buffers) {
  const auto ex = co_await asio::this_coro::executor;
  Tunnel t(ex);
  auto down_buf = buffers.get();
  auto up_buf = buffers.get();
  support::TaskGroup pumps(ex);
  // A pump that ends by an exception is counted out, so that the tunnel still ends.
  auto pump_failed = [&t] {
    t.failed = true;
    --t.running;
    t.wake.cancel();
  };
  pumps.spawn(pump(ToClient{up, s}, down_buf.get(), t), "websocket tunnel (to client)",
              pump_failed);
  pumps.spawn(pump(ToUpstream{s, up}, up_buf.get(), t), "websocket tunnel (to upstream)",
              pump_failed);
  bool closed = false;
  while (t.running > 0) {
    const auto now = Clock::now();
    const bool lingering = t.half_closed != Clock::time_point{};
    if (!closed &&
        (t.failed || now - t.last >= idle || (lingering && now - t.half_closed >= kTunnelLinger))) {
      closed = true;  // both pumps fail out of their I/O now
      up.close();
      s.reset();
    }
    Clock::time_point next = t.last + idle;
    if (lingering) next = std::min(next, t.half_closed + kTunnelLinger);
    t.wake.expires_at(closed ? now + std::chrono::seconds(1) : next);
    co_await t.wake.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  co_await pumps.join();
  buffers.put(std::move(down_buf));
  buffers.put(std::move(up_buf));
}

}  // namespace turnpike::proxy
