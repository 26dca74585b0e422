#include "config/value_reader.h"

#include <algorithm>

#include "config/units.h"

namespace turnpike::config {

SourceLoc loc_of(const YAML::Mark& m) {
  if (m.is_null()) return {};
  return {m.line + 1, m.column + 1};
}

std::string join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

std::string index_path(const std::string& path, std::size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Scalar:
      return "'" + n.Scalar() + "'";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

bool has_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

std::string lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

std::string upper(std::string s) {
  for (char& c : s) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return s;
}

// ---- shapes -------------------------------------------------------------------------------

std::optional<std::vector<Entry>> ValueReader::entries(const Value& v, bool case_insensitive) {
  if (!v.node.IsMap()) {
    error(v, "expected a map, got " + describe(v.node));
    return std::nullopt;
  }
  std::vector<Entry> out;
  for (auto it = v.node.begin(); it != v.node.end(); ++it) {
    const SourceLoc key_loc = loc_of(it->first.Mark());
    if (!it->first.IsScalar()) {
      d_.error(v.path, key_loc, "keys must be strings, got " + describe(it->first));
      continue;
    }
    std::string key = it->first.Scalar();
    const std::string cmp = case_insensitive ? lower(key) : key;
    const bool dup = std::any_of(out.begin(), out.end(), [&](const Entry& e) {
      return (case_insensitive ? lower(e.key) : e.key) == cmp;
    });
    const std::string path = join(v.path, key);
    if (dup) {
      d_.error(path, key_loc, "duplicate key '" + key + "'");
      continue;
    }
    // A null value has no useful mark of its own (yaml-cpp gives the next token's): use the key.
    const SourceLoc value_loc = it->second.IsNull() ? key_loc : loc_of(it->second.Mark());
    d_.record(path, value_loc);
    out.push_back({std::move(key), key_loc, Value{it->second, path, value_loc}});
  }
  return out;
}

std::optional<Fields> ValueReader::fields(const Value& v, Keys known) {
  auto all = entries(v);
  if (!all) return std::nullopt;
  std::vector<Entry> kept;
  const std::vector<std::string_view> candidates(known);
  for (auto& e : *all) {
    if (std::find(known.begin(), known.end(), e.key) == known.end()) {
      d_.error(v.path, e.key_loc, "unknown key '" + e.key + "'" + did_you_mean(e.key, candidates));
      continue;
    }
    kept.push_back(std::move(e));
  }
  return Fields(std::move(kept));
}

std::optional<std::vector<Value>> ValueReader::list(const Value& v) {
  if (!v.node.IsSequence()) {
    error(v, "expected a list, got " + describe(v.node));
    return std::nullopt;
  }
  std::vector<Value> out;
  std::size_t i = 0;
  for (const auto& item : v.node) {
    const SourceLoc loc = item.IsNull() ? v.loc : loc_of(item.Mark());
    auto path = index_path(v.path, i++);
    d_.record(path, loc);
    out.push_back(Value{item, std::move(path), loc});
  }
  return out;
}

// ---- scalars ------------------------------------------------------------------------------

std::optional<std::string> ValueReader::string(const Value& v, bool allow_empty) {
  if (!v.node.IsScalar()) {
    error(v, "expected a string, got " + describe(v.node));
    return std::nullopt;
  }
  if (!allow_empty && v.node.Scalar().empty()) {
    error(v, "must not be empty");
    return std::nullopt;
  }
  return v.node.Scalar();
}

std::optional<std::int64_t> ValueReader::integer(const Value& v, std::int64_t lo, std::int64_t hi) {
  const std::string range =
      "an integer between " + std::to_string(lo) + " and " + std::to_string(hi);
  if (!v.node.IsScalar()) {
    error(v, "expected " + range + ", got " + describe(v.node));
    return std::nullopt;
  }
  const std::string& s = v.node.Scalar();
  std::int64_t value = 0;
  bool ok = !s.empty() && s.size() <= 18;
  for (std::size_t i = 0; ok && i < s.size(); ++i) {
    if (i == 0 && s[i] == '-' && s.size() > 1) continue;
    ok = s[i] >= '0' && s[i] <= '9';
    if (ok) value = value * 10 + (s[i] - '0');
  }
  if (!ok) {
    error(v, "expected " + range + ", got '" + s + "'");
    return std::nullopt;
  }
  if (s[0] == '-') value = -value;
  if (value < lo || value > hi) {
    error(v, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + s);
    return std::nullopt;
  }
  return value;
}

std::optional<bool> ValueReader::boolean(const Value& v) {
  if (v.node.IsScalar()) {
    const auto s = lower(v.node.Scalar());
    if (s == "true") return true;
    if (s == "false") return false;
  }
  error(v, "expected true or false, got " + describe(v.node));
  return std::nullopt;
}

std::optional<Duration> ValueReader::duration(const Value& v, Duration lo, Duration hi) {
  const auto s = string(v);
  if (!s) return std::nullopt;
  const auto d = parse_duration(*s);
  if (!d) {
    if (std::all_of(s->begin(), s->end(), [](char c) { return c >= '0' && c <= '9'; })) {
      error(v, "duration '" + *s + "' needs a unit: ms, s, m or h (e.g. '" + *s + "s')");
    } else {
      error(v, "invalid duration '" + *s + "' (expected e.g. '250ms', '1.5s', '1m', '2h')");
    }
    return std::nullopt;
  }
  if (*d < lo || *d > hi) {
    const std::string low =
        lo == kMinTimeout ? "greater than 0" : "at least " + format_duration(lo);
    error(v, "must be " + low + " and at most " + format_duration(hi) + ", got '" + *s + "'");
    return std::nullopt;
  }
  return d;
}

std::optional<std::uint64_t> ValueReader::size(const Value& v, std::uint64_t lo, std::uint64_t hi) {
  const auto s = string(v);
  if (!s) return std::nullopt;
  const auto n = parse_size(*s);
  if (!n) {
    error(v,
          "invalid size '" + *s + "' (expected bytes, or e.g. '64KiB', '10MiB', '1GiB', '10MB')");
    return std::nullopt;
  }
  if (*n < lo || *n > hi) {
    error(v,
          "must be between " + format_size(lo) + " and " + format_size(hi) + ", got '" + *s + "'");
    return std::nullopt;
  }
  return n;
}

std::optional<std::string> ValueReader::name(const Value& v) {
  auto s = string(v);
  if (s && has_control(*s)) {
    error(v, "must not contain control characters");
    return std::nullopt;
  }
  return s;
}

std::optional<std::string> ValueReader::header_value(const Value& v) {
  auto s = string(v, true);
  if (s && (s->find_first_of("\r\n") != std::string::npos || s->find('\0') != std::string::npos)) {
    error(v, "must not contain CR, LF or NUL");
    return std::nullopt;
  }
  return s;
}

}  // namespace turnpike::config
