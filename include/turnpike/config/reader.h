// How a filter type reads its block under `filters:` with the same checks, messages and
// file:line:column positions as the rest of the config, without seeing YAML: a parser gets a
// Reader and the block's Node, and returns its typed, immutable settings. Control thread only;
// Nodes are valid while the parser runs.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "turnpike/config/config.h"

namespace turnpike::config {

class ValueReader;
struct Value;
class Reader;
class Node;
Node make_node(Reader& r, const Value& v);

/// A value in the config file: its key path ("filters.auth.issuer") and where it was written.
class Node {
 public:
  const std::string& path() const noexcept;
  SourceLoc loc() const noexcept;
  bool is_map() const noexcept;
  bool is_list() const noexcept;
  bool is_scalar() const noexcept;

 private:
  friend class Reader;
  friend Node make_node(Reader& r, const Value& v);
  explicit Node(const void* v) noexcept : v_(v) {}
  const void* v_;
};

/// The keys of a map that passed its known-keys check, in source order.
class Map {
 public:
  const Node* get(std::string_view key) const noexcept;
  const std::vector<std::pair<std::string, Node>>& entries() const noexcept { return entries_; }

 private:
  friend class Reader;
  std::vector<std::pair<std::string, Node>> entries_;
};

/// Reads values, reporting each problem at the value's own position. Every reader returns
/// nullopt after reporting, so a parser just skips what failed and goes on (all errors are
/// reported, not the first).
class Reader {
 public:
  Reader(ValueReader& values, std::string base_dir);
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  /// A map whose keys must be among `known` ("unknown key 'x' (did you mean 'y'?)").
  std::optional<Map> map(const Node& n, std::initializer_list<std::string_view> known);
  /// A map with free-form keys (header names, claim names...); duplicates are errors.
  std::optional<Map> entries(const Node& n, bool case_insensitive = false);
  std::optional<std::vector<Node>> list(const Node& n);

  std::optional<std::string> string(const Node& n, bool allow_empty = false);
  /// A list of non-empty strings; a single string is a list of one.
  std::optional<std::vector<std::string>> strings(const Node& n);
  std::optional<std::int64_t> integer(const Node& n, std::int64_t lo, std::int64_t hi);
  std::optional<bool> boolean(const Node& n);
  std::optional<Duration> duration(const Node& n, Duration lo, Duration hi);
  std::optional<std::uint64_t> size(const Node& n, std::uint64_t lo, std::uint64_t hi);
  /// An HTTP field name (RFC 9110 token), lower-cased.
  std::optional<std::string> header_name(const Node& n);
  /// Same for a name that is a map key (`text`); problems are reported at `at`.
  std::optional<std::string> header_name(const Node& at, std::string_view text);
  /// An HTTP field value: no CR, LF or NUL.
  std::optional<std::string> header_value(const Node& n);
  /// "N/s", "N/min", "N/hour", "N/day" or "N/month"; months only with `allow_month`.
  std::optional<Rate> rate(const Node& n, bool allow_month);
  /// A path relative to the config file's directory made absolute.
  std::string resolve_path(std::string_view path) const;

  void error(const Node& n, std::string message);
  void warning(const Node& n, std::string message);

 private:
  friend Node make_node(Reader& r, const Value& v);
  Node keep(const void* value);
  ValueReader& values_;
  std::string base_dir_;
  struct Arena;
  std::unique_ptr<Arena> arena_;
};

/// Parses one filter type's block (the whole map, `type` included) into its settings; returns
/// null after reporting errors.
using FilterParser = std::shared_ptr<const FilterSettings> (*)(Reader& r, const Node& block);

/// Makes `type` known to the config loader. Start-up only, before any config is loaded
/// (filters::register_builtin_filter_types() registers every built-in type).
void register_filter_parser(std::string_view type, FilterParser parser);

}  // namespace turnpike::config
