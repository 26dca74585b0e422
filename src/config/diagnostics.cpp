#include "config/diagnostics.h"

#include <algorithm>
#include <numeric>

namespace turnpike::config {

void Diagnostics::error(std::string path, SourceLoc loc, std::string message) {
  errors_.push_back({file_, loc.line, loc.column, std::move(path), std::move(message), false});
}

void Diagnostics::warning(std::string path, SourceLoc loc, std::string message) {
  warnings_.push_back({file_, loc.line, loc.column, std::move(path), std::move(message), true});
}

void Diagnostics::record(const std::string& path, SourceLoc loc) {
  locs_.try_emplace(path, loc);
}

SourceLoc Diagnostics::loc(std::string_view path) const {
  std::string p(path);
  while (!p.empty()) {
    if (const auto it = locs_.find(p); it != locs_.end()) return it->second;
    const auto cut = p.find_last_of(".[");
    if (cut == std::string::npos) break;
    p.resize(cut);
  }
  return {};
}

namespace {
std::vector<ConfigError> sorted(std::vector<ConfigError>&& v) {
  std::stable_sort(v.begin(), v.end(), [](const ConfigError& a, const ConfigError& b) {
    return a.line != b.line ? a.line < b.line : a.column < b.column;
  });
  return std::move(v);
}
}  // namespace

std::vector<ConfigError> Diagnostics::take_errors() {
  return sorted(std::move(errors_));
}
std::vector<ConfigError> Diagnostics::take_warnings() {
  return sorted(std::move(warnings_));
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  std::iota(row.begin(), row.end(), std::size_t{0});
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string did_you_mean(std::string_view word, const std::vector<std::string_view>& candidates) {
  // Short words tolerate fewer edits, or every two-letter typo would "mean" something.
  const std::size_t limit = word.size() <= 3 ? 1 : 2;
  std::string_view best;
  std::size_t best_distance = limit + 1;
  for (const auto c : candidates) {
    const auto d = edit_distance(word, c);
    if (d < best_distance) {
      best = c;
      best_distance = d;
    }
  }
  if (best_distance > limit) return {};
  return " (did you mean '" + std::string(best) + "'?)";
}

}  // namespace turnpike::config
