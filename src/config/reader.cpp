#include "turnpike/config/reader.h"

#include <algorithm>
#include <deque>
#include <map>

#include "config/filter_parsers.h"
#include "config/value_reader.h"

namespace turnpike::config {

namespace {
const Value& value(const Node&, const void* v) {
  return *static_cast<const Value*>(v);
}
}  // namespace

Node make_node(Reader& r, const Value& v) {
  return r.keep(&v);
}

struct Reader::Arena {
  std::deque<Value> values;
};

const std::string& Node::path() const noexcept {
  return static_cast<const Value*>(v_)->path;
}
SourceLoc Node::loc() const noexcept {
  return static_cast<const Value*>(v_)->loc;
}
bool Node::is_map() const noexcept {
  return static_cast<const Value*>(v_)->node.IsMap();
}
bool Node::is_list() const noexcept {
  return static_cast<const Value*>(v_)->node.IsSequence();
}
bool Node::is_scalar() const noexcept {
  return static_cast<const Value*>(v_)->node.IsScalar();
}

const Node* Map::get(std::string_view key) const noexcept {
  const auto it = std::find_if(entries_.begin(), entries_.end(),
                               [key](const auto& e) { return e.first == key; });
  return it == entries_.end() ? nullptr : &it->second;
}

Reader::Reader(ValueReader& values, std::string base_dir)
    : values_(values), base_dir_(std::move(base_dir)), arena_(std::make_unique<Arena>()) {}

Reader::~Reader() = default;

Node Reader::keep(const void* v) {
  arena_->values.push_back(*static_cast<const Value*>(v));
  return Node(&arena_->values.back());
}

std::optional<Map> Reader::map(const Node& n, std::initializer_list<std::string_view> known) {
  const auto all = values_.entries(value(n, n.v_));
  if (!all) return std::nullopt;
  Map out;
  const std::vector<std::string_view> candidates(known);
  for (const auto& e : *all) {
    if (std::find(known.begin(), known.end(), e.key) == known.end()) {
      values_.diagnostics().error(n.path(), e.key_loc,
                                  "unknown key '" + e.key + "'" + did_you_mean(e.key, candidates));
      continue;
    }
    out.entries_.emplace_back(e.key, keep(&e.value));
  }
  return out;
}

std::optional<Map> Reader::entries(const Node& n, bool case_insensitive) {
  const auto all = values_.entries(value(n, n.v_), case_insensitive);
  if (!all) return std::nullopt;
  Map out;
  for (const auto& e : *all)
    out.entries_.emplace_back(e.key, keep(&e.value));
  return out;
}

std::optional<std::vector<Node>> Reader::list(const Node& n) {
  const auto items = values_.list(value(n, n.v_));
  if (!items) return std::nullopt;
  std::vector<Node> out;
  out.reserve(items->size());
  for (const auto& item : *items)
    out.push_back(keep(&item));
  return out;
}

std::optional<std::string> Reader::string(const Node& n, bool allow_empty) {
  return values_.string(value(n, n.v_), allow_empty);
}

std::optional<std::vector<std::string>> Reader::strings(const Node& n) {
  if (n.is_scalar()) {
    auto s = string(n);
    if (!s) return std::nullopt;
    return std::vector<std::string>{std::move(*s)};
  }
  const auto items = list(n);
  if (!items) return std::nullopt;
  std::vector<std::string> out;
  bool ok = true;
  for (const Node& item : *items) {
    if (auto s = string(item))
      out.push_back(std::move(*s));
    else
      ok = false;
  }
  if (!ok) return std::nullopt;
  return out;
}

std::optional<std::int64_t> Reader::integer(const Node& n, std::int64_t lo, std::int64_t hi) {
  return values_.integer(value(n, n.v_), lo, hi);
}

std::optional<bool> Reader::boolean(const Node& n) {
  return values_.boolean(value(n, n.v_));
}

std::optional<Duration> Reader::duration(const Node& n, Duration lo, Duration hi) {
  return values_.duration(value(n, n.v_), lo, hi);
}

std::optional<std::uint64_t> Reader::size(const Node& n, std::uint64_t lo, std::uint64_t hi) {
  return values_.size(value(n, n.v_), lo, hi);
}

std::optional<std::string> Reader::header_name(const Node& n) {
  auto s = string(n);
  if (!s) return std::nullopt;
  if (!is_token(*s)) {
    error(n, "'" + *s + "' is not a valid header name");
    return std::nullopt;
  }
  return lower(std::move(*s));
}

std::optional<std::string> Reader::header_name(const Node& at, std::string_view text) {
  if (!is_token(text)) {
    error(at, "'" + std::string(text) + "' is not a valid header name");
    return std::nullopt;
  }
  return lower(std::string(text));
}

std::optional<std::string> Reader::header_value(const Node& n) {
  return values_.header_value(value(n, n.v_));
}

std::optional<Rate> Reader::rate(const Node& n, bool allow_month) {
  const auto s = string(n);
  if (!s) return std::nullopt;
  const std::string units = allow_month ? "s, min, hour, day or month" : "s, min, hour or day";
  const auto slash = s->find('/');
  const std::string_view count = std::string_view(*s).substr(0, slash);
  const bool digits =
      !count.empty() && count.size() <= 15 &&
      std::all_of(count.begin(), count.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (slash == std::string::npos || !digits) {
    error(n, "invalid rate '" + *s + "' (expected a count per unit, e.g. '100/s'; units: " + units +
                 ")");
    return std::nullopt;
  }
  Rate r;
  r.count = std::stoull(std::string(count));
  if (r.count == 0) {
    error(n, "must be at least 1 per unit, got '" + *s + "'");
    return std::nullopt;
  }
  static const std::map<std::string_view, Rate::Period> kUnits = {
      {"s", Rate::Period::Second}, {"sec", Rate::Period::Second}, {"second", Rate::Period::Second},
      {"m", Rate::Period::Minute}, {"min", Rate::Period::Minute}, {"minute", Rate::Period::Minute},
      {"h", Rate::Period::Hour},   {"hour", Rate::Period::Hour},  {"d", Rate::Period::Day},
      {"day", Rate::Period::Day},  {"month", Rate::Period::Month}};
  const auto it = kUnits.find(std::string_view(*s).substr(slash + 1));
  if (it == kUnits.end() || (!allow_month && it->second == Rate::Period::Month)) {
    error(n, "invalid rate unit in '" + *s + "' (units: " + units + ")");
    return std::nullopt;
  }
  r.period = it->second;
  return r;
}

std::string Reader::resolve_path(std::string_view path) const {
  if (path.empty() || path.front() == '/' || base_dir_.empty()) return std::string(path);
  return base_dir_ + "/" + std::string(path);
}

void Reader::error(const Node& n, std::string message) {
  values_.error(value(n, n.v_), std::move(message));
}

void Reader::warning(const Node& n, std::string message) {
  values_.diagnostics().warning(n.path(), n.loc(), std::move(message));
}

// ---- the registry ---------------------------------------------------------------------------

namespace {
std::map<std::string, FilterParser, std::less<>>& parsers() {
  static std::map<std::string, FilterParser, std::less<>> table;
  return table;
}
}  // namespace

void register_filter_parser(std::string_view type, FilterParser parser) {
  parsers()[std::string(type)] = parser;
}

FilterParser find_filter_parser(std::string_view type) {
  const auto it = parsers().find(type);
  return it == parsers().end() ? nullptr : it->second;
}

std::vector<std::string_view> filter_type_names() {
  std::vector<std::string_view> out;
  for (const auto& [name, p] : parsers())
    out.push_back(name);
  return out;
}

}  // namespace turnpike::config
