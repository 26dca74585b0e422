#include "core/reload.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

namespace turnpike::core {

namespace {

std::string listener_key(const config::Listener& l) {
  return l.name + "@" + l.address + ":" + std::to_string(l.port);
}

std::vector<std::string> listener_keys(const config::Config& c) {
  std::vector<std::string> keys;
  for (const auto& l : c.listeners)
    keys.push_back(listener_key(l));
  std::sort(keys.begin(), keys.end());
  return keys;
}

}  // namespace

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

ReloadOutcome prepare_reload(const std::string& path, const Snapshot& current) {
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
  // What a reload cannot apply yet: these need a restart (issue 3 adds listener reconciliation).
  auto restart_only = [&](const std::string& key, const std::string& what) {
    out.errors.push_back(path + ": " + key + ": " + what +
                         " cannot change on reload yet; restart Turnpike to apply it");
  };
  if (next.workers != cur.workers) restart_only("workers", "the number of workers");
  if (next.admin.listen != cur.admin.listen) restart_only("admin.listen", "the admin listener");
  if (next.access_log.path != cur.access_log.path)
    restart_only("access_log.path", "the access log destination");
  if (listener_keys(next) != listener_keys(cur))
    restart_only("listeners", "adding, removing, renaming or moving a listener");
  if (!out.errors.empty()) {
    out.result = "rejected";
    return out;
  }
  out.snapshot = std::make_shared<const Snapshot>(std::move(next), current.generation + 1);
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

nlohmann::json ReloadStatus::to_json() const {
  nlohmann::json j = {
      {"generation", generation_},
      {"loaded_time", rfc3339(loaded_time_)},
      {"digest", digest_},
      {"reloads", {{"applied", applied_}, {"unchanged", unchanged_}, {"rejected", rejected_}}},
      {"last_reload", nullptr},
  };
  if (last_)
    j["last_reload"] = {{"time", rfc3339(last_->time)},
                        {"trigger", last_->trigger},
                        {"result", last_->result},
                        {"errors", last_->errors}};
  return j;
}

}  // namespace turnpike::core
