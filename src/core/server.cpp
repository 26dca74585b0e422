#include "core/server.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "admin/admin_server.h"
#include "core/config_watcher.h"
#include "core/reload.h"
#include "core/sd_notify.h"
#include "core/worker.h"
#include "observability/access_log.h"

namespace turnpike::core {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

struct BoundListener {
  std::string name;
  std::string address;
  std::uint16_t port = 0;
  std::vector<int> fds;  // one per worker
};

// Opens one SO_REUSEPORT socket per worker on the listener's address. A port of 0 is resolved by
// the first bind and reused for the others.
bool bind_listener(const config::Listener& l, unsigned workers, BoundListener& out,
                   std::string& error) {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(l.address, ec);
  if (ec) {
    error = "listener '" + l.name + "': bad address '" + l.address + "'";
    return false;
  }
  out.name = l.name;
  out.address = l.address;
  std::uint16_t port = l.port;
  for (unsigned i = 0; i < workers; ++i) {
    tcp::endpoint ep(addr, port);
    int fd = ::socket(ep.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    bool ok = fd >= 0 && ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
              ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0;
    if (ok && addr.is_v6()) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    ok = ok && ::bind(fd, ep.data(), static_cast<socklen_t>(ep.size())) == 0 &&
         ::listen(fd, 4096) == 0;
    if (!ok) {
      error = "listener '" + l.name + "' on " + l.listen + ": " + std::strerror(errno);
      if (fd >= 0) ::close(fd);
      for (int f : out.fds)
        ::close(f);
      out.fds.clear();
      return false;
    }
    if (port == 0) {
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
      port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    }
    out.fds.push_back(fd);
  }
  out.port = port;
  return true;
}

}  // namespace

int run_server(config::Config cfg) {
  unsigned nworkers = cfg.workers ? cfg.workers : std::max(1u, std::thread::hardware_concurrency());
  const std::string log_path = cfg.access_log.path;
  const std::string config_path = cfg.source_file;
  // `initial` stays alive for the whole run: listeners, admin and drain settings come from it
  // (a reload that would change them is refused). `snapshot` is the one in force.
  const SnapshotPtr initial = std::make_shared<const Snapshot>(std::move(cfg), 1);
  SnapshotPtr snapshot = initial;
  const config::Config& c = initial->config;
  ReloadStatus reload_status(*initial);

  std::unique_ptr<observability::AccessLogSink> log_sink;
  if (log_path != "off") {
    std::string err;
    log_sink = observability::AccessLogSink::open(log_path, err);
    if (!log_sink) {
      spdlog::error("{}", err);
      return 1;
    }
  }

  std::vector<BoundListener> bound(c.listeners.size());
  for (std::size_t i = 0; i < c.listeners.size(); ++i) {
    std::string err;
    if (!bind_listener(c.listeners[i], nworkers, bound[i], err)) {
      spdlog::error("{}", err);
      for (auto& b : bound)
        for (int fd : b.fds)
          ::close(fd);
      return 1;
    }
  }

  asio::io_context control(1);
  std::atomic<bool> ready{false};
  std::vector<std::unique_ptr<Worker>> workers;
  // Reload, on the control thread: validate completely, then publish to every worker. An
  // invalid config changes nothing.
  SdNotifier notifier;
  auto reload = [&](const std::string& trigger) {
    notifier.reloading();
    ReloadOutcome outcome = prepare_reload(config_path, *snapshot);
    if (outcome.snapshot) {
      snapshot = outcome.snapshot;
      for (auto& w : workers)
        w->set_snapshot(snapshot);
      spdlog::info("reload ({}): applied generation {}", trigger, snapshot->generation);
    } else if (outcome.result == "unchanged") {
      spdlog::info("reload ({}): configuration unchanged", trigger);
    } else {
      spdlog::error("reload ({}): rejected, keeping generation {}", trigger, snapshot->generation);
      for (const auto& e : outcome.errors)
        spdlog::error("{}", e);
    }
    reload_status.record(outcome, trigger, *snapshot);
    std::string status = outcome.result == "rejected"
                             ? "reload rejected: " + outcome.errors.front()
                             : "serving generation " + std::to_string(snapshot->generation);
    notifier.send("READY=1\nSTATUS=" + status);
    return reload_status.to_json();
  };
  admin::AdminServer admin(
      control, admin::AdminHooks{
                   [&] { return ready.load(); },
                   [&] { return snapshot; },
                   [&] {
                     nlohmann::json j = nlohmann::json::array();
                     for (const auto& b : bound)
                       j.push_back({{"name", b.name}, {"address", b.address}, {"port", b.port}});
                     return nlohmann::json{{"listeners", j}};
                   },
                   reload,
                   [&] { return reload_status.to_json(); },
                   [&](const std::string& yaml) { return dry_run(config_path, yaml, *snapshot); },
               });
  if (std::string err = admin.start(c.admin.address, c.admin.port); !err.empty()) {
    spdlog::error("{}", err);
    for (auto& b : bound)
      for (int fd : b.fds)
        ::close(fd);
    return 1;
  }

  for (unsigned w = 0; w < nworkers; ++w) {
    auto worker = std::make_unique<Worker>(w, snapshot, log_sink.get());
    for (std::size_t i = 0; i < c.listeners.size(); ++i) {
      const auto& l = c.listeners[i];
      std::uint32_t share = (l.limits.max_connections + nworkers - 1) / nworkers;
      worker->add_listener(l, bound[i].fds[w], share);
    }
    workers.push_back(std::move(worker));
  }
  for (auto& w : workers)
    w->start();
  for (const auto& b : bound)
    spdlog::info("listener '{}' on {}:{} ({} workers)", b.name, b.address, b.port, nworkers);
  spdlog::info("admin on {}:{}", c.admin.address, admin.port());
  ready = true;
  // The config file is watched; a change is reloaded like SIGHUP (debounced).
  ConfigWatcher watcher(control, config_path, c.reload.debounce, [&] { reload("file"); });
  if (c.reload.watch) {
    if (std::string err = watcher.start(); !err.empty())
      spdlog::warn("not watching {} for changes: {}", config_path, err);
  }
  notifier.send("READY=1\nSTATUS=serving generation 1\nMAINPID=" + std::to_string(::getpid()));

  // Drain: stop accepting, let in-flight requests finish up to drain_timeout, then stop.
  asio::signal_set signals(control, SIGINT, SIGTERM, SIGHUP);
  asio::steady_timer drain_timer(control);
  bool draining = false;
  std::chrono::steady_clock::time_point drain_deadline;
  std::function<void()> poll_drain = [&] {
    std::size_t live = 0;
    for (auto& w : workers)
      live += w->live_connections();
    if (live == 0 || std::chrono::steady_clock::now() >= drain_deadline) {
      if (live) spdlog::warn("drain timeout: closing {} connections", live);
      admin.stop();
      control.stop();
      return;
    }
    drain_timer.expires_after(std::chrono::milliseconds(25));
    drain_timer.async_wait([&](const boost::system::error_code& ec) {
      if (!ec) poll_drain();
    });
  };
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        if (sig == SIGHUP) {
          if (!draining) reload("SIGHUP");
          signals.async_wait(on_signal);
          return;
        }
        if (draining) {
          spdlog::warn("second stop signal: stopping now");
          admin.stop();
          control.stop();
          return;
        }
        draining = true;
        ready = false;
        watcher.stop();
        notifier.send("STOPPING=1\nSTATUS=draining");
        spdlog::info("{}: draining (up to {} ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                     c.drain_timeout.count());
        drain_deadline = std::chrono::steady_clock::now() + c.drain_timeout;
        for (auto& w : workers)
          w->begin_drain();
        signals.async_wait(on_signal);
        poll_drain();
      };
  signals.async_wait(on_signal);

  control.run();

  for (auto& w : workers)
    w->stop();
  for (auto& w : workers)
    w->join();
  workers.clear();
  if (log_sink) log_sink->flush();
  spdlog::info("stopped");
  return 0;
}

}  // namespace turnpike::core
