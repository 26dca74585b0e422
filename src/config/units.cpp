#include "config/units.h"

#include <array>
#include <limits>
#include <utility>

#include "turnpike/config/config.h"

namespace turnpike::config {
namespace {

struct Decimal {
  std::uint64_t whole = 0;
  std::uint64_t fraction = 0;  // digits after the point, as an integer
  std::uint64_t scale = 1;     // 10^(number of fraction digits)
  std::string_view rest;       // the unit
};

// "12.5KiB" -> {12, 5, 10, "KiB"}. Caps digit counts so the arithmetic below cannot overflow.
std::optional<Decimal> parse_decimal(std::string_view text) {
  Decimal d;
  std::size_t i = 0;
  std::size_t whole_digits = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    if (++whole_digits > 12) return std::nullopt;
    d.whole = d.whole * 10 + static_cast<std::uint64_t>(text[i] - '0');
    ++i;
  }
  if (whole_digits == 0) return std::nullopt;
  if (i < text.size() && text[i] == '.') {
    ++i;
    std::size_t fraction_digits = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      if (++fraction_digits > 9) return std::nullopt;
      d.fraction = d.fraction * 10 + static_cast<std::uint64_t>(text[i] - '0');
      d.scale *= 10;
      ++i;
    }
    if (fraction_digits == 0) return std::nullopt;
  }
  d.rest = text.substr(i);
  return d;
}

// whole * unit + fraction * unit / scale, only when the result is a whole number.
std::optional<std::uint64_t> apply_unit(const Decimal& d, std::uint64_t unit) {
  constexpr auto kMax = std::numeric_limits<std::uint64_t>::max();
  if (d.whole != 0 && unit > kMax / d.whole) return std::nullopt;
  const std::uint64_t whole = d.whole * unit;
  if (d.fraction != 0 && unit > kMax / d.fraction) return std::nullopt;
  const std::uint64_t scaled = d.fraction * unit;
  if (scaled % d.scale != 0) return std::nullopt;
  const std::uint64_t part = scaled / d.scale;
  if (whole > kMax - part) return std::nullopt;
  return whole + part;
}

}  // namespace

std::optional<Duration> parse_duration(std::string_view text) {
  if (text == "0") return Duration{0};
  const auto d = parse_decimal(text);
  if (!d) return std::nullopt;
  static constexpr std::array<std::pair<std::string_view, std::uint64_t>, 4> kUnits{{
      {"ms", 1},
      {"s", 1'000},
      {"m", 60'000},
      {"h", 3'600'000},
  }};
  for (const auto& [name, ms] : kUnits) {
    if (d->rest != name) continue;
    const auto total = apply_unit(*d, ms);
    if (!total || *total > static_cast<std::uint64_t>(std::numeric_limits<Duration::rep>::max()))
      return std::nullopt;
    return Duration{static_cast<Duration::rep>(*total)};
  }
  return std::nullopt;
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  const auto d = parse_decimal(text);
  if (!d) return std::nullopt;
  static constexpr std::uint64_t kKi = 1024;
  static constexpr std::array<std::pair<std::string_view, std::uint64_t>, 10> kUnits{{
      {"", 1},
      {"B", 1},
      {"KiB", kKi},
      {"MiB", kKi * kKi},
      {"GiB", kKi * kKi * kKi},
      {"TiB", kKi * kKi * kKi * kKi},
      {"KB", 1'000},
      {"MB", 1'000'000},
      {"GB", 1'000'000'000},
      {"TB", 1'000'000'000'000},
  }};
  for (const auto& [name, bytes] : kUnits) {
    if (d->rest == name) return apply_unit(*d, bytes);
  }
  if (d->rest == "kB") return apply_unit(*d, 1'000);  // the SI spelling
  return std::nullopt;
}

std::string format_duration(Duration d) {
  const auto ms = d.count();
  if (ms == 0) return "0s";
  if (ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1'000 == 0) return std::to_string(ms / 1'000) + "s";
  return std::to_string(ms) + "ms";
}

std::string format_size(std::uint64_t bytes) {
  static constexpr std::array<std::pair<std::string_view, std::uint64_t>, 4> kUnits{{
      {"TiB", 1ULL << 40},
      {"GiB", 1ULL << 30},
      {"MiB", 1ULL << 20},
      {"KiB", 1ULL << 10},
  }};
  for (const auto& [name, unit] : kUnits) {
    if (bytes != 0 && bytes % unit == 0) return std::to_string(bytes / unit) + std::string(name);
  }
  return std::to_string(bytes);
}

}  // namespace turnpike::config
