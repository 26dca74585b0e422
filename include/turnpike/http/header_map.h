// Codec-neutral, ordered header list with case-insensitive lookup. Names keep the case they
// arrived with (HTTP/1.1) and compare case-insensitively; HTTP/2 feeds lower-case names.
// Owned by one request on one worker; not thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace turnpike::http {

bool iequals(std::string_view a, std::string_view b) noexcept;

/// `v` without leading and trailing optional whitespace (RFC 9110 OWS: spaces and tabs).
std::string_view trim_ows(std::string_view v) noexcept;

struct HeaderEntry {
  std::string name;
  std::string value;
};

class HeaderMap {
 public:
  using const_iterator = std::vector<HeaderEntry>::const_iterator;

  /// First value of `name`, or nullptr.
  const std::string* get(std::string_view name) const noexcept;
  bool has(std::string_view name) const noexcept { return get(name) != nullptr; }
  /// Number of entries named `name`.
  std::size_t count(std::string_view name) const noexcept;
  /// Appends an entry (repeated names allowed).
  void add(std::string_view name, std::string_view value);
  /// Replaces every entry named `name` by one entry.
  void set(std::string_view name, std::string_view value);
  /// Removes every entry named `name`; returns how many were removed.
  std::size_t remove(std::string_view name) noexcept;

  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }
  void clear() noexcept { entries_.clear(); }
  void reserve(std::size_t n) { entries_.reserve(n); }
  const_iterator begin() const noexcept { return entries_.begin(); }
  const_iterator end() const noexcept { return entries_.end(); }
  std::vector<HeaderEntry>& entries() noexcept { return entries_; }
  const std::vector<HeaderEntry>& entries() const noexcept { return entries_; }

 private:
  std::vector<HeaderEntry> entries_;
};

}  // namespace turnpike::http
