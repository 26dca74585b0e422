#include "core/worker.h"

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <unistd.h>

#include <atomic>
#include <optional>

#include "http1/server_connection.h"
#include "http2/server_connection.h"
#include "proxy/proxy.h"
#include "proxy/worker_context.h"
#include "support/block_cache.h"
#include "support/scoped_deadline.h"
#include "support/spawn.h"
#include "tls/server_context.h"

namespace turnpike::core {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// What the codecs take from a listener's config: their own settings types.
struct CodecSettings {
  http::ServerLimits limits;
  http2::ServerSettings h2;
  bool h2_only = false;  // TLS without http1 in `protocols`
};

CodecSettings codec_settings(const config::Listener& l) {
  CodecSettings c;
  const config::Limits& lim = l.limits;
  c.limits.max_header_bytes = lim.max_header_bytes;
  c.limits.max_headers = lim.max_headers;
  c.limits.max_uri_bytes = lim.max_uri_bytes;
  c.limits.max_body_bytes = lim.max_body_bytes;
  c.limits.header_timeout = lim.header_timeout;
  c.limits.idle_timeout = lim.idle_timeout;
  c.limits.body_timeout = lim.body_timeout;
  const config::Http2Settings& h = l.http2;
  c.h2.max_concurrent_streams = h.max_concurrent_streams;
  c.h2.initial_window_size = h.initial_window_size;
  c.h2.connection_window_size = h.connection_window_size;
  c.h2.max_frame_size = h.max_frame_size;
  c.h2.header_table_size = h.header_table_size;
  c.h2.max_resets_burst = h.max_resets_burst;
  c.h2.max_resets_per_second = h.max_resets_per_second;
  c.h2.max_continuations = h.max_continuations;
  c.h2.max_control_frames_burst = h.max_control_frames_burst;
  c.h2.max_control_frames_per_second = h.max_control_frames_per_second;
  c.h2.max_empty_frames = h.max_empty_frames;
  c.h2_only = l.h2 && !l.http1;
  return c;
}

constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
// Connection objects come from the worker's block cache: one is made and freed per connection.
constexpr support::BlockAllocator<char> kBlocks;

// The client's address as text. IPv4 by hand: address_v4::to_string goes through inet_ntop and
// sprintf, about 1,800 instructions on every new connection.
std::string address_text(const asio::ip::address& a) {
  if (!a.is_v4()) return a.to_string();
  const auto bytes = a.to_v4().to_bytes();
  char buf[16];
  char* p = buf;
  for (std::size_t i = 0; i < 4; ++i) {
    unsigned v = bytes[i];
    if (v >= 100) {
      *p++ = static_cast<char>('0' + v / 100);
      v %= 100;
      *p++ = static_cast<char>('0' + v / 10);
    } else if (v >= 10) {
      *p++ = static_cast<char>('0' + v / 10);
    }
    *p++ = static_cast<char>('0' + v % 10);
    if (i < 3) *p++ = '.';
  }
  return std::string(buf, static_cast<std::size_t>(p - buf));
}

constexpr auto kSweepInterval = std::chrono::milliseconds(200);
constexpr auto kAcceptRestartBackoff = std::chrono::milliseconds(100);
constexpr std::string_view kH2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
}  // namespace

struct Worker::Impl {
  struct Listener {
    ListenerSocket socket;
    std::unique_ptr<tcp::acceptor> acceptor;
    bool removed = false;
  };

  Impl(unsigned i, unsigned n, SnapshotPtr snap, observability::AccessLogSink* log)
      : index(i),
        nworkers(n),
        // Each worker's I/O objects are touched only by its own thread (the control thread just
        // posts), so the reactor's per-descriptor locking can go.
        io_owner(std::make_unique<asio::io_context>(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO)),
        io(*io_owner),
        ctx(io.get_executor(), i, log, n),
        proxy(ctx),
        sweep_timer(std::in_place, io),
        generation(snap->generation) {
    ctx.set_snapshot(std::move(snap));
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

  std::shared_ptr<Listener> make_listener(ListenerSocket sock) {
    auto l = std::make_shared<Listener>();
    l->acceptor = std::make_unique<tcp::acceptor>(io);
    const bool v6 = sock.address.find(':') != std::string::npos;
    l->acceptor->assign(v6 ? tcp::v6() : tcp::v4(), sock.fd);
    l->socket = std::move(sock);
    return l;
  }

  // The listener's settings in the current snapshot (the same address and port; its name and
  // limits may have changed by a reload). Null once a reload removed it.
  const config::Listener* settings(const Listener& l) const {
    for (const auto& lc : ctx.current().config.listeners)
      if (lc.port == l.socket.port && lc.address == l.socket.address) return &lc;
    return nullptr;
  }

  asio::awaitable<void> accept_loop(std::shared_ptr<Listener> lp) {
    Listener& l = *lp;
    asio::steady_timer backoff(io);
    for (;;) {
      const config::Listener* cfg = settings(l);
      if (!cfg || l.removed) co_return;
      const std::uint32_t cap = (cfg->limits.max_connections + nworkers - 1) / nworkers;
      if (ctx.registry().size(l.socket.id) >= cap) {
        // At the connection cap: leave new connections in the kernel's backlog for a moment.
        backoff.expires_after(std::chrono::milliseconds(10));
        co_await backoff.async_wait(kAwait);
        if (draining || l.removed) co_return;
        continue;
      }
      // The peer's address comes with the accept (no getpeername); TCP_NODELAY is inherited
      // from the listening socket.
      tcp::endpoint remote;
      auto [ec, socket] = co_await l.acceptor->async_accept(remote, kAwait);
      if (ec) {
        if (ec == asio::error::operation_aborted || draining || l.removed) co_return;
        // EMFILE and friends: back off instead of spinning.
        spdlog::warn("worker {}: accept on {}: {}", index, cfg->name, ec.message());
        backoff.expires_after(std::chrono::milliseconds(50));
        co_await backoff.async_wait(kAwait);
        continue;
      }
      // Settings come from the current snapshot, so a reload that changes them applies to new
      // connections.
      cfg = settings(l);
      if (!cfg || l.removed) co_return;  // removed while this accept completed: drop it
      http::ConnectionInfo info;
      info.client_address = address_text(remote.address());
      info.client_port = remote.port();
      info.listener = cfg->name;
      info.listener_id = l.socket.id;
      const auto& snap = ctx.current();
      const std::size_t li = static_cast<std::size_t>(cfg - snap.config.listeners.data());
      const CodecSettings codec = codec_settings(*cfg);
      if (const auto& tls = snap.listener_tls[li]) {
        asio::co_spawn(io, tls_handshake(std::move(socket), tls, codec, std::move(info)),
                       support::log_exception("TLS handshake"));
        continue;
      }
      if (cfg->h2c && cfg->http1) {
        asio::co_spawn(io, detect_preface(std::move(socket), codec, std::move(info)),
                       support::log_exception("HTTP/1.1 or h2c preface detection"));
        continue;
      }
      if (cfg->h2c) {
        std::allocate_shared<http2::ServerConnection>(kBlocks, std::move(socket), std::string{},
                                                      codec.limits, codec.h2, std::move(info),
                                                      proxy, ctx.registry())
            ->start();
        continue;
      }
      auto conn = std::allocate_shared<http1::ServerConnection>(
          kBlocks, std::move(socket), codec.limits, std::move(info), proxy, ctx.registry());
      conn->start();
    }
  }

  // HTTP/1.1 and h2c on one port: the first bytes tell which (an HTTP/1.1 request line cannot
  // start with the HTTP/2 connection preface). They are handed to the codec that takes over.
  asio::awaitable<void> detect_preface(tcp::socket socket, CodecSettings codec,
                                       http::ConnectionInfo info) {
    std::string initial;
    char buf[4096];
    // Closes rather than cancels: expiry then sticks even if no read is pending at that moment.
    support::ScopedDeadline deadline(io.get_executor(), codec.limits.header_timeout, [&socket] {
      boost::system::error_code ignored;
      socket.close(ignored);
    });
    bool h2 = false;
    for (;;) {
      auto [ec, n] = co_await socket.async_read_some(asio::buffer(buf), kAwait);
      // Closed, or silent until header_timeout: nothing to answer.
      if (ec || deadline.expired()) co_return;
      initial.append(buf, n);
      const std::size_t k = std::min(initial.size(), kH2Preface.size());
      if (initial.compare(0, k, kH2Preface, 0, k) != 0) break;  // HTTP/1.x
      if (k == kH2Preface.size()) {
        h2 = true;
        break;
      }
    }
    deadline.disarm();
    if (draining) co_return;
    if (h2) {
      std::allocate_shared<http2::ServerConnection>(kBlocks, std::move(socket), std::move(initial),
                                                    codec.limits, codec.h2, std::move(info), proxy,
                                                    ctx.registry())
          ->start();
    } else {
      std::allocate_shared<http1::ServerConnection>(kBlocks, std::move(socket), codec.limits,
                                                    std::move(info), proxy, ctx.registry(), initial)
          ->start();
    }
  }

  // TLS: the handshake runs under the listener's header_timeout; ALPN picks the codec.
  asio::awaitable<void> tls_handshake(tcp::socket socket, std::shared_ptr<tls::ServerContext> tls,
                                      CodecSettings codec, http::ConnectionInfo info) {
    const http::ServerLimits& limits = codec.limits;
    auto stream =
        std::make_unique<http1::ServerConnection::TlsStream>(std::move(socket), tls->context());
    // Closes rather than cancels: the handshake is several reads and writes, and expiry must
    // stick even when it falls between two of them.
    support::ScopedDeadline deadline(io.get_executor(), limits.header_timeout,
                                     [&lowest = stream->next_layer()] {
                                       boost::system::error_code ignored;
                                       lowest.close(ignored);
                                     });
    auto [ec] = co_await stream->async_handshake(asio::ssl::stream_base::server, kAwait);
    deadline.disarm();
    if (ec || deadline.expired()) {
      spdlog::debug("worker {}: TLS handshake with {} failed: {}", index, info.client_address,
                    deadline.expired() ? "timed out" : ec.message());
      co_return;
    }
    SSL* ssl = stream->native_handle();
    info.tls = true;
    info.tls_version = SSL_get_version(ssl);
    if (const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) info.sni = sni;
    if (auto peer = tls::peer_certificate(ssl)) {
      info.client_cert_xfcc = peer->xfcc();
      info.client_cert_subject = std::move(peer->subject);
      info.client_cert_dns = std::move(peer->dns);
      info.client_cert_uri = std::move(peer->uri);
    }
    info.forward_client_cert = tls->settings().forward_client_cert;
    const unsigned char* alpn = nullptr;
    unsigned int alpn_len = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    const bool h2 = (alpn_len == 2 && alpn[0] == 'h' && alpn[1] == '2') || codec.h2_only;
    if (h2) {
      std::allocate_shared<http2::ServerConnection>(kBlocks, std::move(stream), limits, codec.h2,
                                                    std::move(info), proxy, ctx.registry())
          ->start();
      co_return;
    }
    auto conn = std::allocate_shared<http1::ServerConnection>(
        kBlocks, std::move(stream), limits, std::move(info), proxy, ctx.registry());
    conn->start();
  }

  void start_listener(std::shared_ptr<Listener> l) {
    listeners.push_back(l);
    // A worker that silently stopped accepting would look healthy; an accept loop that throws
    // is logged and started again (unless its listener went away meanwhile).
    std::string name =
        fmt::format("worker {}: accept loop on {}:{}", index, l->socket.address, l->socket.port);
    support::spawn_restarting(
        io.get_executor(), std::move(name), kAcceptRestartBackoff,
        [this, l] { return accept_loop(l); }, [this, l] { return !draining && !l->removed; });
  }

  void remove_listener(std::uint64_t id) {
    for (auto it = listeners.begin(); it != listeners.end(); ++it) {
      if ((*it)->socket.id != id) continue;
      (*it)->removed = true;
      boost::system::error_code ignored;
      (*it)->acceptor->close(ignored);
      listeners.erase(it);
      break;
    }
    ctx.registry().drain_listener(id);
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
  unsigned nworkers;
  std::unique_ptr<asio::io_context> io_owner;
  asio::io_context& io;
  proxy::WorkerContext ctx;
  proxy::Proxy proxy;
  std::optional<asio::steady_timer> sweep_timer;
  std::vector<std::shared_ptr<Listener>> listeners;
  std::vector<std::shared_ptr<Listener>> pending;  // added before start()
  std::thread thread;
  bool draining = false;
  std::atomic<std::uint64_t> generation{0};  // written by this worker, read by the control thread
};

Worker::Worker(unsigned index, unsigned workers, SnapshotPtr snapshot,
               observability::AccessLogSink* log)
    : impl_(std::make_unique<Impl>(index, workers, std::move(snapshot), log)) {}

Worker::~Worker() {
  stop();
  join();
}

void Worker::add_listener(ListenerSocket socket) {
  impl_->pending.push_back(impl_->make_listener(std::move(socket)));
}

void Worker::start() {
  Impl* impl = impl_.get();
  for (auto& l : impl->pending)
    impl->start_listener(std::move(l));
  impl->pending.clear();
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

void Worker::apply(SnapshotPtr snapshot, std::vector<ListenerSocket> added,
                   std::vector<std::uint64_t> removed) {
  Impl* impl = impl_.get();
  asio::post(impl->io, [impl, snap = std::move(snapshot), added = std::move(added),
                        removed = std::move(removed)]() mutable {
    const std::uint64_t gen = snap->generation;
    impl->ctx.set_snapshot(std::move(snap));
    impl->generation.store(gen, std::memory_order_release);
    for (std::uint64_t id : removed)
      impl->remove_listener(id);
    for (auto& sock : added) {
      if (impl->draining) {
        ::close(sock.fd);
        continue;
      }
      impl->start_listener(impl->make_listener(std::move(sock)));
    }
  });
}

void Worker::close_generations(std::vector<std::uint64_t> generations) {
  Impl* impl = impl_.get();
  asio::post(impl->io, [impl, gens = std::move(generations)] {
    if (std::size_t n = impl->ctx.close_generations(gens))
      spdlog::info("worker {}: closing {} request(s) of superseded generation(s)", impl->index, n);
  });
}

std::uint64_t Worker::generation() const noexcept {
  return impl_->generation.load(std::memory_order_acquire);
}

std::vector<GenerationUsage> Worker::generation_use() const {
  std::vector<GenerationUsage> out;
  for (const auto& u : impl_->ctx.generation_use())
    out.push_back({u.generation, u.requests, u.connections});
  return out;
}

std::vector<upstream::EndpointUse> Worker::endpoint_use() const {
  return impl_->ctx.endpoint_use();
}

void Worker::begin_drain() {
  Impl* impl = impl_.get();
  asio::post(impl->io, [impl] {
    impl->draining = true;
    for (auto& l : impl->listeners) {
      boost::system::error_code ignored;
      l->acceptor->close(ignored);
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
      l->acceptor->close(ignored);
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
