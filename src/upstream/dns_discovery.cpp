#include "upstream/dns_discovery.h"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <ares.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include "upstream/host_state.h"

namespace turnpike::upstream {

namespace {

using Steady = std::chrono::steady_clock;
using Family = config::DnsSettings::Family;

// c-ares: each query tries each server with this timeout, this many times.
constexpr int kQueryTimeoutMs = 1000;
constexpr int kQueryTries = 2;

std::string query_key(const std::string& host, Family family, const std::string& resolvers) {
  return host + '|' + std::to_string(static_cast<int>(family)) + '|' + resolvers;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v)
    out += (out.empty() ? "" : ", ") + s;
  return out.empty() ? "nothing" : out;
}

}  // namespace

struct DnsDiscovery::State {
  // One name, of one family, asked of one set of servers.
  struct Query {
    std::string host;
    Family family = Family::Auto;
    std::string resolvers;
    config::Duration refresh{5'000};  // the shortest of the clusters that use it
    bool respect_ttl = false;
    std::vector<std::string> addresses;  // sorted IP literals
    bool answered = false;               // had its first answer (or failure)
    bool in_flight = false;
    std::string error;  // the last failure; empty when the last answer was good
    std::chrono::system_clock::time_point at{};
    Steady::time_point due{};
  };
  // An answer's way back to its query: by key, so a query forgotten meanwhile is ignored.
  struct Ask {
    State* state;
    std::string key;
  };

  std::function<void()> changed;
  mutable std::mutex mu;
  std::condition_variable first;                 // a first answer came
  std::map<std::string, Query> queries;          // guarded by mu
  bool stop = false;                             // guarded by mu
  bool any_changed = false;                      // resolver thread only
  int wake = -1;                                 // eventfd: update() and the destructor
  std::map<std::string, ares_channel> channels;  // by resolvers; resolver thread only
  std::thread thread;

  void poke() const noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(wake, &one, sizeof one);
  }

  ares_channel channel(const std::string& resolvers) {
    auto it = channels.find(resolvers);
    if (it != channels.end()) return it->second;
    ares_options opts{};
    opts.timeout = kQueryTimeoutMs;
    opts.tries = kQueryTries;
    ares_channel ch = nullptr;
    if (const int rc = ares_init_options(&ch, &opts, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
        rc != ARES_SUCCESS) {
      spdlog::error("dns: cannot start a resolver: {}", ares_strerror(rc));
      return nullptr;
    }
    if (!resolvers.empty()) {
      if (const int rc = ares_set_servers_ports_csv(ch, resolvers.c_str()); rc != ARES_SUCCESS) {
        spdlog::error("dns: cannot use resolvers {}: {}", resolvers, ares_strerror(rc));
        ares_destroy(ch);
        return nullptr;
      }
    }
    channels.emplace(resolvers, ch);
    return ch;
  }

  static void on_answer(void* arg, int status, int /*timeouts*/, ares_addrinfo* res) {
    std::unique_ptr<Ask> ask(static_cast<Ask*>(arg));
    std::vector<std::string> addrs;
    int ttl = -1;
    if (res != nullptr) {
      for (const ares_addrinfo_node* n = res->nodes; n != nullptr; n = n->ai_next) {
        char text[INET6_ADDRSTRLEN] = {};
        if (n->ai_family == AF_INET)
          ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(n->ai_addr)->sin_addr, text,
                      sizeof text);
        else if (n->ai_family == AF_INET6)
          ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(n->ai_addr)->sin6_addr, text,
                      sizeof text);
        else
          continue;
        addrs.emplace_back(text);
        ttl = ttl < 0 ? n->ai_ttl : std::min(ttl, n->ai_ttl);
      }
      ares_freeaddrinfo(res);
    }
    ask->state->answered(ask->key, status, std::move(addrs), ttl);
  }

  void answered(const std::string& key, int status, std::vector<std::string> addrs, int ttl) {
    std::lock_guard lock(mu);
    auto it = queries.find(key);
    if (it == queries.end()) return;  // forgotten meanwhile
    Query& q = it->second;
    q.in_flight = false;
    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
      q.due = Steady::now();
      return;
    }
    const auto now = Steady::now();
    q.at = std::chrono::system_clock::now();
    auto interval = q.refresh;
    // A name that does not exist, or has no address of the family: no endpoints. Any other
    // failure keeps what it resolved to last.
    const bool authoritative =
        status == ARES_SUCCESS || status == ARES_ENOTFOUND || status == ARES_ENODATA;
    if (authoritative) {
      if (status != ARES_SUCCESS) addrs.clear();
      std::sort(addrs.begin(), addrs.end());
      addrs.erase(std::unique(addrs.begin(), addrs.end()), addrs.end());
      const std::string error = status == ARES_SUCCESS ? "" : ares_strerror(status);
      if (!q.answered || addrs != q.addresses) {
        if (q.answered)
          spdlog::info("dns: '{}' resolves to {} (was {})", q.host, join(addrs), join(q.addresses));
        else if (addrs.empty())
          spdlog::warn("dns: '{}' does not resolve ({}): its clusters have no endpoint for it",
                       q.host, error);
        else
          spdlog::info("dns: '{}' resolves to {}", q.host, join(addrs));
        any_changed = true;
      } else if (!q.error.empty() && error.empty()) {
        spdlog::info("dns: '{}' resolves again", q.host);
      }
      q.addresses = std::move(addrs);
      q.error = error;
      if (status == ARES_SUCCESS && q.respect_ttl && ttl >= 0) {
        const config::Duration floor = std::min(q.refresh, config::Duration{1'000});
        interval = std::min(q.refresh, std::max(config::Duration{std::int64_t{ttl} * 1000}, floor));
      }
    } else {
      const std::string error = ares_strerror(status);
      if (q.error != error)
        spdlog::warn(
            "dns: cannot resolve '{}' ({}): {}", q.host, error,
            q.addresses.empty() ? "no endpoints for it yet" : "keeping " + join(q.addresses));
      q.error = error;
    }
    q.answered = true;
    q.due = now + interval;
    first.notify_all();
  }

  void run() {
    for (;;) {
      std::vector<std::tuple<std::string, std::string, Family, std::string>> start;
      std::set<std::string> used;
      Steady::time_point next = Steady::now() + std::chrono::hours(1);
      {
        std::lock_guard lock(mu);
        if (stop) break;
        const auto now = Steady::now();
        for (auto& [key, q] : queries) {
          used.insert(q.resolvers);
          if (q.in_flight) continue;
          if (q.due <= now) {
            q.in_flight = true;
            start.emplace_back(key, q.host, q.family, q.resolvers);
          } else {
            next = std::min(next, q.due);
          }
        }
      }
      // Servers no name uses any more: their pending queries end (ARES_EDESTRUCTION).
      for (auto it = channels.begin(); it != channels.end();) {
        if (used.contains(it->first)) {
          ++it;
          continue;
        }
        ares_channel ch = it->second;
        it = channels.erase(it);
        ares_destroy(ch);
      }
      for (const auto& [key, host, family, resolvers] : start) {
        ares_channel ch = channel(resolvers);
        if (ch == nullptr) {
          answered(key, ARES_ECONNREFUSED, {}, -1);
          continue;
        }
        ares_addrinfo_hints hints{};
        hints.ai_family = family == Family::V4   ? AF_INET
                          : family == Family::V6 ? AF_INET6
                                                 : AF_UNSPEC;
        hints.ai_flags = ARES_AI_NOSORT;  // sorted here, by text
        ares_getaddrinfo(ch, host.c_str(), nullptr, &hints, &State::on_answer, new Ask{this, key});
      }
      // Wait for the sockets of every channel, the next due query, or a poke.
      std::vector<pollfd> fds{{wake, POLLIN, 0}};
      std::vector<ares_channel> owner{nullptr};
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - Steady::now());
      for (const auto& [resolvers, ch] : channels) {
        ares_socket_t socks[ARES_GETSOCK_MAXNUM];
        const int bits = ares_getsock(ch, socks, ARES_GETSOCK_MAXNUM);
        for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
          short events = 0;
          if (ARES_GETSOCK_READABLE(bits, i)) events |= POLLIN;
          if (ARES_GETSOCK_WRITABLE(bits, i)) events |= POLLOUT;
          if (events == 0) continue;
          fds.push_back({socks[i], events, 0});
          owner.push_back(ch);
        }
        timeval tv{};
        if (ares_timeout(ch, nullptr, &tv) != nullptr)
          wait = std::min(wait, std::chrono::milliseconds(tv.tv_sec * 1000 + tv.tv_usec / 1000));
      }
      const int ms = static_cast<int>(std::clamp<std::int64_t>(wait.count(), 0, 3'600'000));
      if (::poll(fds.data(), fds.size(), ms) < 0 && errno != EINTR) {
        spdlog::error("dns: poll failed: {}", std::strerror(errno));
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (fds[0].revents & POLLIN) {
        std::uint64_t n = 0;
        [[maybe_unused]] const auto r = ::read(wake, &n, sizeof n);
      }
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        const bool in = (fds[i].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
        const bool out = (fds[i].revents & POLLOUT) != 0;
        ares_process_fd(owner[i], in ? fds[i].fd : ARES_SOCKET_BAD,
                        out ? fds[i].fd : ARES_SOCKET_BAD);
      }
      for (const auto& [resolvers, ch] : channels)
        ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // timeouts
      if (std::exchange(any_changed, false)) changed();
    }
    for (auto& [resolvers, ch] : channels)
      ares_destroy(ch);
    channels.clear();
  }
};

DnsDiscovery::DnsDiscovery(std::function<void()> changed) : state_(std::make_shared<State>()) {
  static std::once_flag init;
  std::call_once(init, [] { ares_library_init(ARES_LIB_INIT_ALL); });
  state_->changed = std::move(changed);
  state_->wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (state_->wake < 0) throw std::runtime_error("dns: eventfd failed");
  state_->thread = std::thread([s = state_.get()] {
    ::pthread_setname_np(::pthread_self(), "tp-dns");
    s->run();
  });
}

DnsDiscovery::~DnsDiscovery() {
  {
    std::lock_guard lock(state_->mu);
    state_->stop = true;
  }
  state_->poke();
  state_->thread.join();
  ::close(state_->wake);
}

void DnsDiscovery::update(const config::Config& cfg) {
  std::map<std::string, State::Query> want;
  for (const auto& c : cfg.clusters) {
    if (!c.dns_discovery) continue;
    for (const auto& n : c.names) {
      if (!n.address.empty()) continue;  // an IP literal
      const std::string host = endpoint_host(n);
      auto [it, fresh] = want.try_emplace(query_key(host, c.dns.family, c.dns.resolvers));
      State::Query& q = it->second;
      if (fresh) {
        q.host = host;
        q.family = c.dns.family;
        q.resolvers = c.dns.resolvers;
        q.refresh = c.dns.refresh;
      }
      q.refresh = std::min(q.refresh, c.dns.refresh);
      q.respect_ttl = q.respect_ttl || c.dns.respect_ttl;
    }
  }
  bool added = false;
  {
    std::lock_guard lock(state_->mu);
    const auto now = Steady::now();
    std::erase_if(state_->queries, [&](const auto& kv) { return !want.contains(kv.first); });
    for (auto& [key, w] : want) {
      auto it = state_->queries.find(key);
      if (it == state_->queries.end()) {
        w.due = now;
        state_->queries.emplace(key, std::move(w));
        added = true;
        continue;
      }
      State::Query& q = it->second;
      if (w.refresh < q.refresh) q.due = std::min(q.due, now + w.refresh);
      q.refresh = w.refresh;
      q.respect_ttl = w.respect_ttl;
    }
  }
  if (added) state_->poke();
}

bool DnsDiscovery::wait_first(std::chrono::milliseconds timeout) {
  std::unique_lock lock(state_->mu);
  return state_->first.wait_for(lock, timeout, [&] {
    return std::all_of(state_->queries.begin(), state_->queries.end(),
                       [](const auto& kv) { return kv.second.answered; });
  });
}

void DnsDiscovery::fill(config::Config& cfg) const {
  std::lock_guard lock(state_->mu);
  for (auto& c : cfg.clusters) {
    if (!c.dns_discovery) continue;
    c.endpoints.clear();
    std::set<std::string> seen;
    auto add = [&](config::Endpoint e) {
      if (seen.insert(endpoint_label(e)).second) c.endpoints.push_back(std::move(e));
    };
    for (const auto& n : c.names) {
      if (!n.address.empty()) {
        add(n);
        continue;
      }
      auto it = state_->queries.find(query_key(endpoint_host(n), c.dns.family, c.dns.resolvers));
      if (it == state_->queries.end()) continue;
      for (const auto& a : it->second.addresses) {
        config::Endpoint e = n;
        e.address = a;
        add(std::move(e));
      }
    }
  }
}

nlohmann::json DnsDiscovery::status(const config::Cluster& cluster) const {
  nlohmann::json out = nlohmann::json::array();
  std::lock_guard lock(state_->mu);
  for (const auto& n : cluster.names) {
    if (!n.address.empty()) continue;
    nlohmann::json e = {{"name", n.written}};
    auto it = state_->queries.find(
        query_key(endpoint_host(n), cluster.dns.family, cluster.dns.resolvers));
    if (it == state_->queries.end() || !it->second.answered) {
      e["resolved"] = false;
      out.push_back(std::move(e));
      continue;
    }
    const State::Query& q = it->second;
    e["resolved"] = true;
    e["addresses"] = q.addresses;
    e["answered_at_ms"] =
        std::chrono::duration_cast<std::chrono::milliseconds>(q.at.time_since_epoch()).count();
    if (!q.error.empty()) e["error"] = q.error;
    out.push_back(std::move(e));
  }
  return out;
}

bool same_dns_endpoints(const config::Config& a, const config::Config& b,
                        std::vector<std::string>& why) {
  bool same = true;
  const std::size_t n = std::min(a.clusters.size(), b.clusters.size());
  for (std::size_t i = 0; i < n; ++i) {
    const auto& ca = a.clusters[i];
    const auto& cb = b.clusters[i];
    if (!ca.dns_discovery) continue;
    std::set<std::string> la, lb;
    for (const auto& e : ca.endpoints)
      la.insert(endpoint_label(e));
    for (const auto& e : cb.endpoints)
      lb.insert(endpoint_label(e));
    if (la == lb) continue;
    same = false;
    std::vector<std::string> added, removed;
    std::set_difference(lb.begin(), lb.end(), la.begin(), la.end(), std::back_inserter(added));
    std::set_difference(la.begin(), la.end(), lb.begin(), lb.end(), std::back_inserter(removed));
    std::string line = "cluster '" + ca.name + "':";
    if (!added.empty()) line += " added " + join(added);
    if (!removed.empty()) line += (added.empty() ? " removed " : "; removed ") + join(removed);
    why.push_back(std::move(line));
  }
  return same;
}

}  // namespace turnpike::upstream
