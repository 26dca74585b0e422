#include "core/reload.h"

#include "turnpike/config/to_json.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

namespace turnpike::core {

namespace {

// Settings a reload cannot apply (they belong to the process): one message each.
std::vector<std::string> restart_required(const std::string& path, const config::Config& next,
                                          const config::Config& cur) {
  std::vector<std::string> out;
  auto add = [&](const std::string& key, const std::string& what) {
    out.push_back(path + ": " + key + ": " + what +
                  " cannot change on reload; restart Turnpike to apply it");
  };
  if (next.workers != cur.workers) add("workers", "the number of workers");
  if (next.admin.listen != cur.admin.listen) add("admin.listen", "the admin listener");
  if (next.access_log.path != cur.access_log.path)
    add("access_log.path", "the access log destination");
  return out;
}

// Added, removed and changed entries of one named list (listeners, clusters, routes).
nlohmann::json diff_section(const nlohmann::json& before, const nlohmann::json& after) {
  nlohmann::json added = nlohmann::json::array(), removed = nlohmann::json::array(),
                 changed = nlohmann::json::array();
  auto find = [](const nlohmann::json& list, const nlohmann::json& name) -> const nlohmann::json* {
    for (const auto& e : list)
      if (e.contains("name") && e["name"] == name) return &e;
    return nullptr;
  };
  for (const auto& e : after) {
    const nlohmann::json* old = find(before, e["name"]);
    if (!old)
      added.push_back(e["name"]);
    else if (*old != e)
      changed.push_back(e["name"]);
  }
  for (const auto& e : before)
    if (!find(after, e["name"])) removed.push_back(e["name"]);
  return {{"added", added}, {"removed", removed}, {"changed", changed}};
}

}  // namespace

nlohmann::json dry_run(const std::string& path, const std::string& yaml, const Snapshot& current) {
  auto loaded = yaml.empty() ? config::load_file(path) : config::load_string(yaml, path);
  nlohmann::json errors = nlohmann::json::array();
  for (const auto& e : loaded.errors)
    errors.push_back(e.to_string());
  nlohmann::json out = {{"valid", loaded.errors.empty()}, {"errors", errors}};
  if (!loaded.config) return out;
  nlohmann::json before = config::to_json(current.config);
  nlohmann::json after = config::to_json(*loaded.config);
  nlohmann::json changes;
  for (const char* section : {"listeners", "clusters", "routes"})
    changes[section] = diff_section(before[section], after[section]);
  out["changes"] = changes;
  out["unchanged"] = loaded.config->digest == current.config.digest;
  out["restart_required"] = restart_required(path, *loaded.config, current.config);
  return out;
}

std::string rfc3339(std::chrono::system_clock::time_point t) {
  auto secs = std::chrono::system_clock::to_time_t(t);
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms));
  return buf;
}

ReloadOutcome prepare_reload(const std::string& path, const Snapshot& current,
                             const std::function<void(config::Config&)>& fill) {
  ReloadOutcome out;
  auto loaded = config::load_file(path);
  if (!loaded.errors.empty()) {
    out.result = "rejected";
    for (const auto& e : loaded.errors)
      out.errors.push_back(e.to_string());
    return out;
  }
  config::Config& next = *loaded.config;
  const config::Config& cur = current.config;
  if (next.digest == cur.digest) {
    out.result = "unchanged";
    return out;
  }
  out.errors = restart_required(path, next, cur);
  if (!out.errors.empty()) {
    out.result = "rejected";
    return out;
  }
  if (fill) fill(next);
  try {
    out.snapshot = std::make_shared<const Snapshot>(std::move(next), current.generation + 1);
  } catch (const std::exception& e) {
    out.result = "rejected";
    out.errors.push_back(path + ": " + e.what());
    return out;
  }
  out.result = "applied";
  return out;
}

ReloadStatus::ReloadStatus(const Snapshot& initial)
    : generation_(initial.generation),
      loaded_time_(initial.loaded_at),
      digest_(initial.config.digest) {}

void ReloadStatus::record(const ReloadOutcome& outcome, const std::string& trigger,
                          const Snapshot& current) {
  if (outcome.result == "applied") ++applied_;
  if (outcome.result == "rejected") ++rejected_;
  if (outcome.result == "unchanged") ++unchanged_;
  generation_ = current.generation;
  loaded_time_ = current.loaded_at;
  digest_ = current.config.digest;
  last_ = Last{std::chrono::system_clock::now(), trigger, outcome.result, outcome.errors};
}

void ReloadStatus::rebuilt(const Snapshot& current) {
  generation_ = current.generation;
  ++dns_updates_;
}

nlohmann::json ReloadStatus::to_json() const {
  nlohmann::json j = {
      {"generation", generation_},
      {"loaded_time", rfc3339(loaded_time_)},
      {"digest", digest_},
      {"reloads", {{"applied", applied_}, {"unchanged", unchanged_}, {"rejected", rejected_}}},
      {"last_reload", nullptr},
      {"dns_updates", dns_updates_},
  };
  if (last_)
    j["last_reload"] = {{"time", rfc3339(last_->time)},
                        {"trigger", last_->trigger},
                        {"result", last_->result},
                        {"errors", last_->errors}};
  return j;
}

}  // namespace turnpike::core
