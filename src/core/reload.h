// Configuration reload, decided on the control thread: load and validate the file completely,
// compare it with the running snapshot, and either build the next snapshot or explain why
// nothing changes. Workers are not touched here; the caller publishes the result.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/snapshot.h"

namespace turnpike::core {

struct ReloadOutcome {
  SnapshotPtr snapshot;             // set when result == "applied"
  std::string result;               // "applied" | "unchanged" | "rejected"
  std::vector<std::string> errors;  // "file:line:col: key: message" lines when rejected
};

/// Loads `path` and compares it with `current`. Control thread only (blocking file I/O and
/// name resolution). `fill`: sets the endpoints of DNS clusters (upstream/dns_discovery.h) in
/// the new config before its snapshot is built.
ReloadOutcome prepare_reload(const std::string& path, const Snapshot& current,
                             const std::function<void(config::Config&)>& fill = {});

/// Validates a candidate (the YAML text, or the file at `path` when `yaml` is empty) against
/// `current` and describes what a reload would change, applying nothing:
/// {"valid", "errors": [...], "changes": {"listeners"|"clusters"|"routes":
///  {"added", "removed", "changed"}}, "restart_required": [...]}.
nlohmann::json dry_run(const std::string& path, const std::string& yaml, const Snapshot& current);

/// What GET /config/status reports.
class ReloadStatus {
 public:
  explicit ReloadStatus(const Snapshot& initial);
  void record(const ReloadOutcome& outcome, const std::string& trigger, const Snapshot& current);
  /// A new generation of the same config: what its DNS clusters resolve to changed.
  void rebuilt(const Snapshot& current);
  nlohmann::json to_json() const;

 private:
  struct Last {
    std::chrono::system_clock::time_point time;
    std::string trigger;
    std::string result;
    std::vector<std::string> errors;
  };
  std::uint64_t generation_;
  std::chrono::system_clock::time_point loaded_time_;
  std::string digest_;
  std::uint64_t applied_ = 0;
  std::uint64_t rejected_ = 0;
  std::uint64_t unchanged_ = 0;
  std::uint64_t dns_updates_ = 0;
  std::optional<Last> last_;
};

/// RFC 3339 UTC with milliseconds.
std::string rfc3339(std::chrono::system_clock::time_point t);

}  // namespace turnpike::core
