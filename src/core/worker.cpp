#include "core/worker.h"

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <optional>

#include "http1/server_connection.h"
#include "proxy/proxy.h"
#include "proxy/worker_context.h"

namespace turnpike::core {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {
constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
constexpr auto kSweepInterval = std::chrono::milliseconds(200);
}  // namespace

struct Worker::Impl {
  struct Listener {
    const config::Listener* cfg;  // points into the snapshot the worker holds
    std::unique_ptr<tcp::acceptor> acceptor;
    std::uint32_t max_connections;
    std::size_t open = 0;
  };

  Impl(unsigned i, SnapshotPtr snap, observability::AccessLogSink* log)
      : index(i),
        // Each worker's I/O objects are touched only by its own thread (the control thread just
        // posts), so the reactor's per-descriptor locking can go.
        io_owner(std::make_unique<asio::io_context>(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO)),
        io(*io_owner),
        ctx(io.get_executor(), i, log),
        proxy(ctx),
        sweep_timer(std::in_place, io),
        snapshot(std::move(snap)) {
    ctx.set_snapshot(snapshot);
  }

  // Tear down in dependency order: everything that lives on the io_context goes before it, and
  // the io_context (whose destruction frees suspended coroutine frames, which unpin snapshots
  // and unregister connections) goes before the worker context they refer to.
  ~Impl() {
    listeners.clear();
    sweep_timer.reset();
    ctx.close_idle_upstreams();
    io_owner.reset();
  }

  asio::awaitable<void> accept_loop(Listener& l) {
    asio::steady_timer backoff(io);
    for (;;) {
      if (ctx.registry().size() >= l.max_connections) {
        // At the connection cap: leave new connections in the kernel's backlog for a moment.
        backoff.expires_after(std::chrono::milliseconds(10));
        co_await backoff.async_wait(kAwait);
        if (draining) co_return;
        continue;
      }
      auto [ec, socket] = co_await l.acceptor->async_accept(kAwait);
      if (ec) {
        if (ec == asio::error::operation_aborted || draining) co_return;
        // EMFILE and friends: back off instead of spinning.
        spdlog::warn("worker {}: accept on {}: {}", index, l.cfg->name, ec.message());
        backoff.expires_after(std::chrono::milliseconds(50));
        co_await backoff.async_wait(kAwait);
        continue;
      }
      boost::system::error_code opt_ec;
      socket.set_option(tcp::no_delay(true), opt_ec);
      auto remote = socket.remote_endpoint(opt_ec);
      if (opt_ec) continue;  // already reset by the peer
      http::ConnectionInfo info;
      info.client_address = remote.address().to_string();
      info.client_port = remote.port();
      info.listener = l.cfg->name;
      // Limits come from the current snapshot, so a reload that changes them applies to new
      // connections (the listener itself, name and address, is the same in every snapshot).
      const config::Limits* limits = &l.cfg->limits;
      for (const auto& lc : ctx.current().config.listeners)
        if (lc.name == l.cfg->name) limits = &lc.limits;
      auto conn = std::make_shared<http1::ServerConnection>(std::move(socket), *limits,
                                                            std::move(info), proxy, ctx.registry());
      conn->start();
    }
  }

  void schedule_sweep() {
    sweep_timer->expires_after(kSweepInterval);
    sweep_timer->async_wait([this](const boost::system::error_code& ec) {
      if (ec) return;
      ctx.sweep();
      schedule_sweep();
    });
  }

  unsigned index;
  std::unique_ptr<asio::io_context> io_owner;
  asio::io_context& io;
  proxy::WorkerContext ctx;
  proxy::Proxy proxy;
  std::optional<asio::steady_timer> sweep_timer;
  SnapshotPtr snapshot;
  std::vector<Listener> listeners;
  std::thread thread;
  bool draining = false;
};

Worker::Worker(unsigned index, SnapshotPtr snapshot, observability::AccessLogSink* log)
    : impl_(std::make_unique<Impl>(index, std::move(snapshot), log)) {}

Worker::~Worker() {
  stop();
  join();
}

void Worker::add_listener(const config::Listener& listener, int fd, std::uint32_t max_connections) {
  Impl::Listener l;
  l.cfg = &listener;
  l.acceptor = std::make_unique<tcp::acceptor>(impl_->io);
  const bool v6 = listener.address.find(':') != std::string::npos;
  l.acceptor->assign(v6 ? tcp::v6() : tcp::v4(), fd);
  l.max_connections = max_connections;
  impl_->listeners.push_back(std::move(l));
}

void Worker::start() {
  Impl* impl = impl_.get();
  for (auto& l : impl->listeners) {
    asio::co_spawn(impl->io, impl->accept_loop(l), asio::detached);
  }
  impl->schedule_sweep();
  impl->thread = std::thread([impl] {
    try {
      impl->io.run();
    } catch (const std::exception& e) {
      // An exception escaping a handler is a bug; a worker cannot continue in an unknown state.
      spdlog::critical("worker {}: fatal: {}", impl->index, e.what());
      std::abort();
    }
    impl->ctx.access_log().flush();
  });
}

void Worker::set_snapshot(SnapshotPtr snapshot) {
  Impl* impl = impl_.get();
  asio::post(impl->io, [impl, snap = std::move(snapshot)]() mutable {
    impl->ctx.set_snapshot(std::move(snap));
  });
}

void Worker::begin_drain() {
  Impl* impl = impl_.get();
  asio::post(impl->io, [impl] {
    impl->draining = true;
    for (auto& l : impl->listeners) {
      boost::system::error_code ignored;
      l.acceptor->close(ignored);
    }
    impl->ctx.registry().start_drain();
  });
}

void Worker::stop() {
  Impl* impl = impl_.get();
  if (impl->io.stopped()) return;
  asio::post(impl->io, [impl] {
    impl->draining = true;
    for (auto& l : impl->listeners) {
      boost::system::error_code ignored;
      l.acceptor->close(ignored);
    }
    impl->ctx.registry().abort_all();
    impl->ctx.close_idle_upstreams();
    impl->sweep_timer->cancel();
    impl->ctx.access_log().flush();
    impl->io.stop();
  });
}

void Worker::join() {
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::size_t Worker::live_connections() const noexcept {
  return impl_->ctx.registry().live_count();
}

}  // namespace turnpike::core
