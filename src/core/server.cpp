#include "core/server.h"

#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <thread>

#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "admin/admin_server.h"
#include "core/config_watcher.h"
#include "core/generations.h"
#include "core/reload.h"
#include "core/sd_notify.h"
#include "core/worker.h"
#include "observability/access_log.h"
#include "upstream/dns_discovery.h"
#include "upstream/health_check.h"

namespace turnpike::core {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

struct BoundListener {
  std::uint64_t id = 0;
  std::string name;
  std::string address;
  std::uint16_t configured_port = 0;  // as configured (0: the kernel picks)
  std::uint16_t port = 0;             // as bound
  std::vector<int> fds;               // one per worker; owned by the workers once handed over
};

bool same_socket(const config::Listener& l, const BoundListener& b) {
  return l.address == b.address && l.port == b.configured_port;
}

// TCP_DEFER_ACCEPT (listeners[].defer_accept): 1 second, which Linux rounds to one SYN-ACK
// retransmission; a client that has sent nothing by then is accepted as usual.
bool set_defer_accept(int fd, bool on) {
  const int secs = on ? 1 : 0;
  return ::setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs) == 0;
}

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
  out.configured_port = l.port;
  std::uint16_t port = l.port;
  for (unsigned i = 0; i < workers; ++i) {
    tcp::endpoint ep(addr, port);
    int fd = ::socket(ep.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    // TCP_NODELAY here: accepted sockets inherit it (Linux), one system call per connection
    // saved on the accept path.
    bool ok = fd >= 0 && ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
              ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0 &&
              ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0;
    if (ok && addr.is_v6()) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    ok = ok && set_defer_accept(fd, l.defer_accept);
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

void close_fds(std::vector<BoundListener>& bound) {
  for (auto& b : bound)
    for (int fd : b.fds)
      ::close(fd);
  bound.clear();
}

}  // namespace

int run_server(config::Config cfg) {
  // Signal handlers first: READY=1 tells systemd it may send SIGHUP (Type=notify-reload), and a
  // signal that arrives before the handler exists takes its default action (SIGHUP, SIGTERM:
  // exit). Caught from here on, a signal waits in `signals` until the loop below runs.
  asio::io_context control(1);
  asio::signal_set signals(control, SIGINT, SIGTERM, SIGHUP);

  const unsigned nworkers =
      cfg.workers ? cfg.workers : std::max(1u, std::thread::hardware_concurrency());
  // Settings a reload cannot change (prepare_reload refuses it): kept from the first config.
  const std::string log_path = cfg.access_log.path;
  const std::string config_path = cfg.source_file;
  const config::Admin admin_cfg = cfg.admin;
  // DNS discovery: one resolver thread for the process. An answer that changes a cluster's
  // addresses reaches the control thread, which builds the next generation (on_dns, below).
  std::function<void()> on_dns;
  upstream::DnsDiscovery dns([&] { asio::post(control, [&] { on_dns(); }); });
  dns.update(cfg);
  // So that a working DNS gives the first request its endpoints; bounded, so that a DNS outage
  // does not hold the start (those clusters answer 503 until their names resolve).
  if (!dns.wait_first(std::chrono::milliseconds(1000)))
    spdlog::warn("dns: not every name answered within 1 s; starting without them");
  dns.fill(cfg);
  SnapshotPtr first;
  try {
    first = std::make_shared<const Snapshot>(std::move(cfg), 1);
  } catch (const std::exception& e) {
    spdlog::error("{}: {}", config_path, e.what());
    return 1;
  }
  Generations generations(std::move(first));
  // Active health checks: one checker thread for the process, told each snapshot put in force.
  upstream::HealthChecker health_checker;
  auto check_health = [&](const Snapshot& snap) {
    std::vector<upstream::HealthTarget> targets;
    for (std::size_t i = 0; i < snap.config.clusters.size(); ++i) {
      auto t = upstream::health_targets(snap.config.clusters[i], snap.cluster_hosts[i],
                                        snap.cluster_tls[i]);
      std::move(t.begin(), t.end(), std::back_inserter(targets));
    }
    health_checker.update(std::move(targets));
  };
  check_health(*generations.current());
  // The snapshot in force; also referenced by `generations`, which holds every live one.
  auto current = [&]() -> const SnapshotPtr& { return generations.current(); };
  ReloadStatus reload_status(*current());

  std::unique_ptr<observability::AccessLogSink> log_sink;
  if (log_path != "off") {
    std::string err;
    log_sink = observability::AccessLogSink::open(log_path, err);
    if (!log_sink) {
      spdlog::error("{}", err);
      return 1;
    }
  }

  // Listening sockets are bound here, on the control thread, one SO_REUSEPORT socket per worker;
  // a reload binds added listeners before anything changes, and never touches kept ones.
  std::uint64_t next_listener_id = 1;
  std::vector<BoundListener> bound;
  for (const auto& l : current()->config.listeners) {
    BoundListener b;
    std::string err;
    if (!bind_listener(l, nworkers, b, err)) {
      spdlog::error("{}", err);
      close_fds(bound);
      return 1;
    }
    b.id = next_listener_id++;
    bound.push_back(std::move(b));
  }

  std::atomic<bool> ready{false};
  bool draining = false;
  std::vector<std::unique_ptr<Worker>> workers;
  SdNotifier notifier;

  // Generations: the control thread keeps every live snapshot, frees those no worker uses any
  // more (so a worker never pays for freeing one), and closes the requests of generations over
  // max_live_generations or past generation_drain_timeout.
  asio::steady_timer generation_timer(control);
  auto collect_generations = [&] {
    if (generations.collect() > 0) ::malloc_trim(0);  // hand freed snapshots back to the OS
  };
  auto maintain_generations = [&] {
    collect_generations();
    // Count only once every worker has moved to the current generation: until then the one
    // before it is still referenced as some worker's current, not only by pinned requests.
    for (const auto& w : workers)
      if (w->generation() != current()->generation) return;
    std::vector<std::uint64_t> due = generations.due_for_close();
    if (due.empty()) return;
    spdlog::info(
        "closing requests still pinned to generation(s) {} (max_live_generations {}, "
        "generation_drain_timeout {} ms)",
        fmt::join(due, ", "), current()->config.reload.max_live_generations,
        current()->config.reload.generation_drain_timeout.count());
    for (auto& w : workers)
      w->close_generations(due);
  };
  std::function<void()> schedule_generation_sweep = [&] {
    generation_timer.expires_after(std::chrono::milliseconds(100));
    generation_timer.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      maintain_generations();
      schedule_generation_sweep();
    });
  };
  auto generation_usage = [&] {
    std::vector<GenerationUsage> usage;
    for (const auto& w : workers) {
      for (const auto& u : w->generation_use()) {
        auto it = std::find_if(usage.begin(), usage.end(), [&](const GenerationUsage& g) {
          return g.generation == u.generation;
        });
        if (it == usage.end()) it = usage.insert(usage.end(), GenerationUsage{u.generation});
        it->requests += u.requests;
        it->connections += u.connections;
      }
    }
    return usage;
  };

  std::unique_ptr<ConfigWatcher> watcher;
  std::function<void(const std::string&)> reload_fn;
  auto watched_files = [&] {
    std::vector<std::string> files{config_path};
    for (auto& f : current()->config.referenced_files())
      files.push_back(std::move(f));
    return files;
  };
  auto sync_watcher = [&] {
    const config::ReloadSettings& rs = current()->config.reload;
    if (!rs.watch || draining) {
      watcher.reset();
      return;
    }
    if (watcher) {
      watcher->set_debounce(rs.debounce);
      if (std::string err = watcher->set_paths(watched_files()); !err.empty())
        spdlog::warn("config watch: {}", err);
      return;
    }
    watcher = std::make_unique<ConfigWatcher>(control, watched_files(), rs.debounce,
                                              [&] { reload_fn("file"); });
    if (std::string err = watcher->start(); !err.empty())
      spdlog::warn("not watching {} for changes: {}", config_path, err);
  };

  // Reload, on the control thread: validate completely and bind added listeners, then publish to
  // every worker. An invalid config (or a listener that cannot be bound) changes nothing.
  auto reload = [&](const std::string& trigger) {
    notifier.reloading();
    collect_generations();
    const SnapshotPtr before = current();
    ReloadOutcome outcome =
        prepare_reload(config_path, *before, [&](config::Config& c) { dns.fill(c); });
    std::vector<BoundListener> added;
    std::vector<std::uint64_t> removed;
    if (outcome.snapshot) {
      const auto& next = outcome.snapshot->config.listeners;
      for (const auto& l : next) {
        if (std::any_of(bound.begin(), bound.end(),
                        [&](const BoundListener& b) { return same_socket(l, b); }))
          continue;
        BoundListener b;
        std::string err;
        if (!bind_listener(l, nworkers, b, err)) {
          outcome.snapshot.reset();
          outcome.result = "rejected";
          outcome.errors.push_back(config_path + ": listeners: " + err);
          close_fds(added);
          break;
        }
        b.id = next_listener_id++;
        added.push_back(std::move(b));
      }
    }
    if (outcome.snapshot) {
      const auto& next = outcome.snapshot->config.listeners;
      for (auto b = bound.begin(); b != bound.end();) {
        auto it = std::find_if(next.begin(), next.end(),
                               [&](const config::Listener& l) { return same_socket(l, *b); });
        if (it != next.end()) {
          b->name = it->name;  // kept (its name, limits and options may change)
          for (int fd : b->fds)
            set_defer_accept(fd, it->defer_accept);
          ++b;
          continue;
        }
        removed.push_back(b->id);
        spdlog::info("listener '{}' on {}:{} removed: stops accepting, its connections drain",
                     b->name, b->address, b->port);
        b = bound.erase(b);
      }
      for (unsigned w = 0; w < workers.size(); ++w) {
        std::vector<Worker::ListenerSocket> sockets;
        for (const auto& b : added)
          sockets.push_back({b.id, b.address, b.configured_port, b.fds[w]});
        workers[w]->apply(outcome.snapshot, std::move(sockets), removed);
      }
      for (auto& b : added) {
        spdlog::info("listener '{}' on {}:{} added ({} workers)", b.name, b.address, b.port,
                     nworkers);
        b.fds.clear();  // owned by the workers now
        bound.push_back(std::move(b));
      }
      generations.add(outcome.snapshot);
      check_health(*outcome.snapshot);
      dns.update(outcome.snapshot->config);
      spdlog::info("reload ({}): applied generation {}", trigger, current()->generation);
      // Not from inside the watcher's own callback: it may be replaced.
      asio::post(control, sync_watcher);
    } else if (outcome.result == "unchanged") {
      spdlog::info("reload ({}): configuration unchanged", trigger);
    } else {
      spdlog::error("reload ({}): rejected, keeping generation {}", trigger, current()->generation);
      for (const auto& e : outcome.errors)
        spdlog::error("{}", e);
    }
    reload_status.record(outcome, trigger, *current());
    std::string status = outcome.result == "rejected"
                             ? "reload rejected: " + outcome.errors.front()
                             : "serving generation " + std::to_string(current()->generation);
    notifier.send("READY=1\nSTATUS=" + status);
    return reload_status.to_json();
  };
  reload_fn = [&](const std::string& trigger) { reload(trigger); };
  // A DNS answer changed: the running config with the new addresses is the next generation
  // (pools and endpoint state of kept addresses carry over; removed ones drain).
  on_dns = [&] {
    if (draining || workers.empty()) return;
    collect_generations();
    const SnapshotPtr before = current();
    config::Config next = before->config;
    dns.fill(next);
    std::vector<std::string> changes;
    if (upstream::same_dns_endpoints(before->config, next, changes)) return;
    SnapshotPtr snap;
    try {
      snap = std::make_shared<const Snapshot>(std::move(next), before->generation + 1, *before);
    } catch (const std::exception& e) {
      spdlog::error("dns: cannot apply the new addresses: {}", e.what());
      return;
    }
    for (auto& w : workers)
      w->apply(snap);
    generations.add(snap);
    check_health(*snap);
    reload_status.rebuilt(*snap);
    for (const auto& c : changes)
      spdlog::info("dns: {} (generation {})", c, snap->generation);
  };
  admin::AdminServer admin(
      control,
      admin::AdminHooks{
          [&] { return ready.load(); },
          [&] {
            const SnapshotPtr& s = current();
            return admin::GenerationView{s, &s->config, &s->routes, s->generation, s->loaded_at};
          },
          [&] {
            nlohmann::json j = nlohmann::json::array();
            for (const auto& b : bound)
              j.push_back({{"name", b.name}, {"address", b.address}, {"port", b.port}});
            return nlohmann::json{{"listeners", j}};
          },
          [&](const std::string& trigger) {
            if (draining) return nlohmann::json{{"error", "draining: reloads are not accepted"}};
            return reload(trigger);
          },
          [&] { return reload_status.to_json(); },
          [&](const std::string& yaml) { return dry_run(config_path, yaml, *current()); },
          [&] {
            collect_generations();
            return generations.to_json(generation_usage());
          },
          [&] {
            std::vector<upstream::EndpointUse> use;
            for (const auto& w : workers) {
              auto u = w->endpoint_use();
              std::move(u.begin(), u.end(), std::back_inserter(use));
            }
            nlohmann::json out = current()->clusters_json(use);
            const auto& clusters = current()->config.clusters;
            auto& list = out["clusters"];
            for (std::size_t i = 0; i < clusters.size() && i < list.size(); ++i)
              if (clusters[i].dns_discovery) list[i]["dns"] = dns.status(clusters[i]);
            return out;
          },
      });
  if (std::string err = admin.start(admin_cfg.address, admin_cfg.port); !err.empty()) {
    spdlog::error("{}", err);
    close_fds(bound);
    return 1;
  }

  for (unsigned w = 0; w < nworkers; ++w) {
    auto worker = std::make_unique<Worker>(w, nworkers, current(), log_sink.get());
    for (const auto& b : bound)
      worker->add_listener({b.id, b.address, b.configured_port, b.fds[w]});
    workers.push_back(std::move(worker));
  }
  for (auto& b : bound)
    b.fds.clear();  // owned by the workers now
  for (auto& w : workers)
    w->start();
  for (const auto& b : bound)
    spdlog::info("listener '{}' on {}:{} ({} workers)", b.name, b.address, b.port, nworkers);
  spdlog::info("admin on {}:{}", admin_cfg.address, admin.port());
  ready = true;
  schedule_generation_sweep();
  // The config file and the files it names are watched; a change is reloaded like SIGHUP
  // (debounced). reload.watch and reload.debounce apply anew after each reload.
  sync_watcher();
  notifier.send("READY=1\nSTATUS=serving generation 1\nMAINPID=" + std::to_string(::getpid()));

  // Drain: stop accepting, let in-flight requests finish up to drain_timeout, then stop.
  asio::steady_timer drain_timer(control);
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
        watcher.reset();
        notifier.send("STOPPING=1\nSTATUS=draining");
        const auto drain_timeout = current()->config.drain_timeout;
        spdlog::info("{}: draining (up to {} ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                     drain_timeout.count());
        drain_deadline = std::chrono::steady_clock::now() + drain_timeout;
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
