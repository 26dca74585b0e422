// Reading YAML values with their key paths and positions: the shape and scalar checks every
// part of the config loader shares (the top-level loader and the filter types' parsers through
// config::Reader). Each check reports its error at the value's own node. Internal to config/.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/diagnostics.h"
#include "turnpike/config/config.h"

namespace turnpike::config {

using Keys = std::initializer_list<std::string_view>;

inline constexpr Duration kMaxTimeout = std::chrono::hours(24);
inline constexpr Duration kMinTimeout{1};

SourceLoc loc_of(const YAML::Mark& m);
std::string join(const std::string& path, std::string_view key);
std::string index_path(const std::string& path, std::size_t i);
std::string describe(const YAML::Node& n);
bool is_token(std::string_view s);
bool has_control(std::string_view s);
std::string lower(std::string s);
std::string upper(std::string s);

/// A node with its key path and the location its errors point at.
struct Value {
  YAML::Node node;
  std::string path;
  SourceLoc loc;
};

/// The entries of a YAML map, in source order.
struct Entry {
  std::string key;
  SourceLoc key_loc;
  Value value;
};

class Fields {
 public:
  explicit Fields(std::vector<Entry>&& entries) : entries_(std::move(entries)) {}
  const Value* get(std::string_view key) const {
    const auto it = std::find_if(entries_.begin(), entries_.end(),
                                 [key](const Entry& e) { return e.key == key; });
    return it == entries_.end() ? nullptr : &it->value;
  }

 private:
  std::vector<Entry> entries_;
};

class ValueReader {
 public:
  explicit ValueReader(Diagnostics& diag) : d_(diag) {}

  void error(const Value& v, std::string message) { d_.error(v.path, v.loc, std::move(message)); }
  Diagnostics& diagnostics() noexcept { return d_; }

  // Shapes.
  std::optional<std::vector<Entry>> entries(const Value& v, bool case_insensitive = false);
  std::optional<Fields> fields(const Value& v, Keys known);
  std::optional<std::vector<Value>> list(const Value& v);

  // Scalars.
  std::optional<std::string> string(const Value& v, bool allow_empty = false);
  std::optional<std::int64_t> integer(const Value& v, std::int64_t lo, std::int64_t hi);
  std::optional<bool> boolean(const Value& v);
  std::optional<Duration> duration(const Value& v, Duration lo, Duration hi);
  std::optional<std::uint64_t> size(const Value& v, std::uint64_t lo, std::uint64_t hi);
  std::optional<std::string> name(const Value& v);
  std::optional<std::string> header_value(const Value& v);

  template <typename T>
  void set_int(const Fields& f, std::string_view key, T& out, std::int64_t lo, std::int64_t hi) {
    if (const auto* v = f.get(key)) {
      if (const auto i = integer(*v, lo, hi)) out = static_cast<T>(*i);
    }
  }
  void set_duration(const Fields& f, std::string_view key, Duration& out, Duration lo = kMinTimeout,
                    Duration hi = kMaxTimeout) {
    if (const auto* v = f.get(key)) {
      if (const auto d = duration(*v, lo, hi)) out = *d;
    }
  }

 protected:
  Diagnostics& d_;
};

}  // namespace turnpike::config
