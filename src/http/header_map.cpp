#include "turnpike/http/header_map.h"

#include <algorithm>
#include <array>

namespace turnpike::http {
namespace {

// ASCII-only folding: header names are tokens, and a locale-aware tolower() would be both
// slower and wrong (e.g. Turkish dotless i).
constexpr std::array<unsigned char, 256> make_lower_table() {
  std::array<unsigned char, 256> t{};
  for (int i = 0; i < 256; ++i) {
    t[static_cast<std::size_t>(i)] =
        static_cast<unsigned char>(i >= 'A' && i <= 'Z' ? i + ('a' - 'A') : i);
  }
  return t;
}
constexpr auto kLower = make_lower_table();

}  // namespace

std::string_view trim_ows(std::string_view v) noexcept {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
    v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t'))
    v.remove_suffix(1);
  return v;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (kLower[static_cast<unsigned char>(a[i])] != kLower[static_cast<unsigned char>(b[i])]) {
      return false;
    }
  }
  return true;
}

const std::string* HeaderMap::get(std::string_view name) const noexcept {
  for (const auto& e : entries_) {
    if (iequals(e.name, name)) return &e.value;
  }
  return nullptr;
}

std::size_t HeaderMap::count(std::string_view name) const noexcept {
  std::size_t n = 0;
  for (const auto& e : entries_) {
    if (iequals(e.name, name)) ++n;
  }
  return n;
}

void HeaderMap::add(std::string_view name, std::string_view value) {
  entries_.push_back(HeaderEntry{std::string(name), std::string(value)});
}

void HeaderMap::set(std::string_view name, std::string_view value) {
  auto first = std::find_if(entries_.begin(), entries_.end(),
                            [name](const HeaderEntry& e) { return iequals(e.name, name); });
  if (first == entries_.end()) {
    add(name, value);
    return;
  }
  // Keep the position of the first occurrence so header order stays stable.
  first->value.assign(value);
  auto rest = std::remove_if(std::next(first), entries_.end(),
                             [name](const HeaderEntry& e) { return iequals(e.name, name); });
  entries_.erase(rest, entries_.end());
}

std::size_t HeaderMap::remove(std::string_view name) noexcept {
  auto it = std::remove_if(entries_.begin(), entries_.end(),
                           [name](const HeaderEntry& e) { return iequals(e.name, name); });
  const auto n = static_cast<std::size_t>(entries_.end() - it);
  entries_.erase(it, entries_.end());
  return n;
}

}  // namespace turnpike::http
