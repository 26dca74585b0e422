#include "config/validate.h"

#include "config/diagnostics.h"

#include <algorithm>
#include <string>
#include <unordered_map>
#include <vector>

namespace turnpike::config {
namespace {

std::string at(std::string_view list, std::size_t i) {
  return std::string(list) + "[" + std::to_string(i) + "]";
}

// The path to point at for an item's name: the name itself when written, else the item.
std::string name_path(const Diagnostics& diag, std::string_view list, std::size_t i) {
  auto p = at(list, i) + ".name";
  return diag.has(p) ? p : at(list, i);
}

template <typename T>
void check_unique_names(const std::vector<T>& items, std::string_view list, std::string_view what,
                        Diagnostics& diag) {
  std::unordered_map<std::string, std::size_t> seen;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (items[i].name.empty()) continue;  // already reported as invalid
    const auto [it, fresh] = seen.try_emplace(items[i].name, i);
    if (fresh) continue;
    const auto path = name_path(diag, list, i);
    diag.error(path, diag.loc(path),
               "duplicate " + std::string(what) + " name '" + items[i].name + "' (also " +
                   at(list, it->second) + ")");
  }
}

// Listener and route `filters:` lists name instances under `filters:`.
void check_filter_references(const Config& config, Diagnostics& diag) {
  std::vector<std::string_view> names;
  for (const auto& f : config.filters)
    names.push_back(f.name);
  auto check = [&](const std::vector<std::string>& list, const std::string& at_path) {
    for (std::size_t i = 0; i < list.size(); ++i) {
      if (config.find_filter(list[i]) != nullptr) continue;
      const auto path = at(at_path, i);
      diag.error(path, diag.loc(path),
                 "unknown filter '" + list[i] + "'" +
                     (names.empty() ? std::string(" (there is no filters: section)")
                                    : did_you_mean(list[i], names)));
    }
  };
  for (std::size_t i = 0; i < config.listeners.size(); ++i)
    check(config.listeners[i].filters, at("listeners", i) + ".filters");
  for (std::size_t i = 0; i < config.routes.size(); ++i)
    check(config.routes[i].filters, at("routes", i) + ".filters");
}

// Consumer names are unique, and so are API keys (a key identifies one consumer).
void check_consumers(const Config& config, Diagnostics& diag) {
  check_unique_names(config.consumers, "consumers", "consumer", diag);
  std::unordered_map<std::string, std::size_t> keys;
  for (std::size_t i = 0; i < config.consumers.size(); ++i) {
    const auto& keys_of = config.consumers[i].api_key_sha256;
    for (std::size_t k = 0; k < keys_of.size(); ++k) {
      const auto [it, fresh] = keys.try_emplace(keys_of[k], i);
      if (fresh) continue;
      const auto path = at(at("consumers", i) + ".api_keys", k);
      diag.error(path, diag.loc(path),
                 "this API key is also a key of " + at("consumers", it->second) + " ('" +
                     config.consumers[it->second].name + "')");
    }
  }
}

}  // namespace

void validate_references(const Config& config, Diagnostics& diag) {
  check_filter_references(config, diag);
  for (const auto& f : config.filters) {
    if (!f.settings) continue;
    f.settings->validate(config, [&](std::string_view key, std::string message) {
      std::string path = "filters." + f.name;
      if (!key.empty()) path += "." + std::string(key);
      diag.error(path, diag.loc(path), std::move(message));
    });
  }
  check_consumers(config, diag);
  check_unique_names(config.listeners, "listeners", "listener", diag);
  check_unique_names(config.clusters, "clusters", "cluster", diag);
  check_unique_names(config.routes, "routes", "route", diag);

  // Port 0 asks the kernel for any free port, so two of those never collide.
  std::unordered_map<std::string, std::size_t> addresses;
  for (std::size_t i = 0; i < config.listeners.size(); ++i) {
    const auto& l = config.listeners[i];
    if (l.listen.empty() || l.port == 0) continue;
    const auto key = l.address + "|" + std::to_string(l.port);
    const auto [it, fresh] = addresses.try_emplace(key, i);
    const auto path = at("listeners", i) + ".listen";
    if (!fresh) {
      diag.error(
          path, diag.loc(path),
          "duplicate listen address '" + l.listen + "' (also " + at("listeners", it->second) + ")");
    }
    if (l.address == config.admin.address && l.port == config.admin.port) {
      diag.error(path, diag.loc(path),
                 "'" + l.listen + "' is also the admin listen address (admin.listen)");
    }
  }

  // A cluster whose name was invalid would make every reference to it look unknown.
  const bool names_complete = std::none_of(config.clusters.begin(), config.clusters.end(),
                                           [](const Cluster& c) { return c.name.empty(); });
  if (!names_complete) return;
  std::vector<std::string_view> names;
  for (const auto& c : config.clusters)
    names.push_back(c.name);
  for (std::size_t i = 0; i < config.routes.size(); ++i) {
    const auto& r = config.routes[i];
    for (std::size_t b = 0; b < r.backends.size(); ++b) {
      const auto& cluster = r.backends[b].cluster;
      if (cluster.empty() || config.find_cluster(cluster) != nullptr) continue;
      auto path = at("routes", i) + ".backend";
      if (!diag.has(path)) path = at(at("routes", i) + ".backends", b) + ".cluster";
      diag.error(path, diag.loc(path),
                 "unknown cluster '" + cluster + "'" + did_you_mean(cluster, names));
    }
    if (r.mirror && !r.mirror->cluster.empty() &&
        config.find_cluster(r.mirror->cluster) == nullptr) {
      const auto path = at("routes", i) + ".mirror.cluster";
      diag.error(
          path, diag.loc(path),
          "unknown cluster '" + r.mirror->cluster + "'" + did_you_mean(r.mirror->cluster, names));
    }
  }
}

}  // namespace turnpike::config
