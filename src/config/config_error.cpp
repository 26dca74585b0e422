#include <algorithm>

#include "turnpike/config/config.h"

namespace turnpike::config {

std::string ConfigError::to_string() const {
  std::string out = file;
  if (line > 0) {
    out += ':' + std::to_string(line) + ':' + std::to_string(column);
  }
  out += ": ";
  if (warning) out += "warning: ";
  if (!path.empty()) out += path + ": ";
  out += message;
  return out;
}

const Cluster* Config::find_cluster(std::string_view name) const {
  const auto it = std::find_if(clusters.begin(), clusters.end(),
                               [name](const Cluster& c) { return c.name == name; });
  return it == clusters.end() ? nullptr : &*it;
}

}  // namespace turnpike::config

namespace turnpike::config {

const FilterInstance* Config::find_filter(std::string_view name) const {
  const auto it = std::find_if(filters.begin(), filters.end(),
                               [name](const FilterInstance& f) { return f.name == name; });
  return it == filters.end() ? nullptr : &*it;
}

const Consumer* Config::find_consumer(std::string_view name) const {
  const auto it = std::find_if(consumers.begin(), consumers.end(),
                               [name](const Consumer& c) { return c.name == name; });
  return it == consumers.end() ? nullptr : &*it;
}

Duration Rate::length() const noexcept {
  using std::chrono::hours;
  switch (period) {
    case Period::Second:
      return Duration{1'000};
    case Period::Minute:
      return Duration{60'000};
    case Period::Hour:
      return hours(1);
    case Period::Day:
      return hours(24);
    case Period::Month:
      return hours(24 * 30);
  }
  return Duration{1'000};
}

std::string Rate::to_string() const {
  static constexpr const char* kUnits[] = {"s", "min", "hour", "day", "month"};
  return std::to_string(count) + "/" + kUnits[static_cast<int>(period)];
}

}  // namespace turnpike::config
