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
