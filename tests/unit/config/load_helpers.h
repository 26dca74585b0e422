// Shared helpers for the config tests: load inline YAML and look at the messages as a user would.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "turnpike/config/config.h"

namespace turnpike::config::testing {

inline std::vector<std::string> error_lines(const LoadResult& r) {
  std::vector<std::string> out;
  for (const auto& e : r.errors)
    out.push_back(e.to_string());
  return out;
}

inline std::vector<std::string> warning_lines(const LoadResult& r) {
  std::vector<std::string> out;
  for (const auto& w : r.warnings)
    out.push_back(w.to_string());
  return out;
}

inline std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines)
    out += l + "\n";
  return out;
}

// A listener and a cluster, so that a test can focus on the part it is about.
inline constexpr const char* kPreamble = R"(listeners:
  - name: public
    listen: 127.0.0.1:8080
clusters:
  - name: users
    endpoints: ["127.0.0.1:9001"]
  - name: orders
    endpoints: ["127.0.0.1:9003"]
)";

/// Loads `yaml`, expecting exactly these error lines (and no config).
inline void expect_errors(const std::string& yaml, const std::vector<std::string>& expected) {
  const auto r = load_string(yaml, "t.yaml");
  EXPECT_EQ(error_lines(r), expected) << yaml;
  EXPECT_FALSE(r.config.has_value());
}

/// Loads `yaml`, expecting it to be valid; returns the config.
inline Config expect_valid(const std::string& yaml) {
  auto r = load_string(yaml, "t.yaml");
  EXPECT_TRUE(r.errors.empty()) << joined(error_lines(r));
  if (!r.config) return Config{};
  return std::move(*r.config);
}

}  // namespace turnpike::config::testing
