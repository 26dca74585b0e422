// Collects the errors and warnings of one config load, and remembers where each key path
// was written so that checks made after parsing (validate.cpp) can still point at a line.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "turnpike/config/config.h"

namespace turnpike::config {

class Diagnostics {
 public:
  explicit Diagnostics(std::string file) : file_(std::move(file)) {}

  void error(std::string path, SourceLoc loc, std::string message);
  void warning(std::string path, SourceLoc loc, std::string message);

  /// Remembers that `path` was written at `loc` (first record wins).
  void record(const std::string& path, SourceLoc loc);
  /// Where `path` was written; falls back to its nearest recorded ancestor, then to {0, 0}.
  SourceLoc loc(std::string_view path) const;
  /// Whether `path` itself was written in the source.
  bool has(const std::string& path) const { return locs_.contains(path); }

  bool has_errors() const noexcept { return !errors_.empty(); }
  const std::string& file() const noexcept { return file_; }

  /// Errors and warnings in source order (line, then column).
  std::vector<ConfigError> take_errors();
  std::vector<ConfigError> take_warnings();

 private:
  std::string file_;
  std::vector<ConfigError> errors_;
  std::vector<ConfigError> warnings_;
  std::unordered_map<std::string, SourceLoc> locs_;
};

/// Levenshtein distance (insertions, deletions, substitutions), for did-you-mean hints.
std::size_t edit_distance(std::string_view a, std::string_view b);

/// " (did you mean 'x'?)" when one candidate is close to `word`, else "".
std::string did_you_mean(std::string_view word, const std::vector<std::string_view>& candidates);

}  // namespace turnpike::config
