#include "turnpike/http/path.h"

#include <array>

#include "turnpike/http/header_map.h"

namespace turnpike::http {
namespace {

constexpr char kHexUpper[] = "0123456789ABCDEF";

constexpr int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// RFC 3986 unreserved: ALPHA DIGIT - . _ ~
constexpr bool is_unreserved(unsigned char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

// Space, controls and DEL never appear raw in a valid request-target; '#' (a fragment) is
// never sent by a conforming client and would make routing and upstream disagree.
constexpr bool is_forbidden_raw(unsigned char c) noexcept {
  return c <= 0x20 || c == 0x7f || c == '#';
}

bool istarts_with(std::string_view s, std::string_view prefix) noexcept {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

void append_escape(std::string& out, unsigned char c) {
  const char esc[3] = {'%', kHexUpper[c >> 4], kHexUpper[c & 0xF]};
  out.append(esc, 3);
}

// Normalizes `path` (which starts with '/') into `out` in one pass: decode, merge slashes and
// resolve dot-segments segment by segment. Returns false on invalid input.
bool normalize_path(std::string_view path, std::string& out) {
  out.clear();
  out.reserve(path.size() + 1);
  out.push_back('/');
  std::size_t i = 0;
  const std::size_t n = path.size();
  while (true) {
    while (i < n && path[i] == '/')
      ++i;  // merge repeated slashes
    if (i == n) break;
    // `out` ends with '/' here; decode one segment after it.
    const std::size_t seg_start = out.size();
    while (i < n && path[i] != '/') {
      const auto c = static_cast<unsigned char>(path[i]);
      if (c == '%') {
        if (i + 2 >= n) return false;
        const int hi = hex_value(path[i + 1]);
        const int lo = hex_value(path[i + 2]);
        if (hi < 0 || lo < 0) return false;
        const auto decoded = static_cast<unsigned char>(hi * 16 + lo);
        if (decoded == 0) return false;
        if (is_unreserved(decoded)) {
          out.push_back(static_cast<char>(decoded));
        } else {
          append_escape(out, decoded);
        }
        i += 3;
      } else if (is_forbidden_raw(c)) {
        return false;
      } else if (c >= 0x80) {
        // Raw UTF-8 from lax clients: encode so "/caf\xC3\xA9" and "/caf%C3%A9" route alike.
        append_escape(out, c);
        ++i;
      } else {
        out.push_back(static_cast<char>(c));
        ++i;
      }
    }
    const std::string_view seg(out.data() + seg_start, out.size() - seg_start);
    if (seg == ".") {
      out.resize(seg_start);
    } else if (seg == "..") {
      out.resize(seg_start);
      if (out.size() > 1) {
        // Drop the previous segment, keeping its leading '/'; at the root ".." stays put.
        out.pop_back();
        out.resize(out.rfind('/') + 1);
      }
    } else if (i < n) {
      out.push_back('/');
    }
  }
  return true;
}

}  // namespace

std::optional<SplitTarget> normalize_target(std::string_view target) {
  std::string_view rest = target;
  if (rest.empty()) return std::nullopt;
  if (rest.front() != '/') {
    // Absolute form, as sent to proxies: keep only the path and query.
    std::size_t skip = 0;
    if (istarts_with(rest, "http://")) {
      skip = 7;
    } else if (istarts_with(rest, "https://")) {
      skip = 8;
    } else {
      return std::nullopt;  // includes "*" (asterisk-form) and relative references
    }
    rest.remove_prefix(skip);
    const auto end = rest.find_first_of("/?");
    const std::string_view authority = rest.substr(0, end);
    if (authority.empty()) return std::nullopt;
    for (char c : authority) {
      if (is_forbidden_raw(static_cast<unsigned char>(c))) return std::nullopt;
    }
    rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
  }

  std::string_view raw_path = rest;
  std::string_view raw_query;
  const auto q = rest.find('?');
  if (q != std::string_view::npos) {
    raw_path = rest.substr(0, q);
    raw_query = rest.substr(q + 1);
  }
  for (char c : raw_query) {
    if (is_forbidden_raw(static_cast<unsigned char>(c))) return std::nullopt;
  }

  SplitTarget result;
  if (raw_path.empty()) {
    result.path = "/";  // "http://host?x" has an empty path
  } else if (!normalize_path(raw_path, result.path)) {
    return std::nullopt;
  }
  result.query.assign(raw_query);
  return result;
}

std::size_t decode_query_component(std::string_view raw, char* out) noexcept {
  std::size_t o = 0;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    const char c = raw[i];
    if (c == '+') {
      out[o++] = ' ';
    } else if (c == '%' && i + 2 < raw.size() && hex_value(raw[i + 1]) >= 0 &&
               hex_value(raw[i + 2]) >= 0) {
      out[o++] = static_cast<char>(hex_value(raw[i + 1]) * 16 + hex_value(raw[i + 2]));
      i += 2;
    } else {
      out[o++] = c;
    }
  }
  return o;
}

bool query_component_equals(std::string_view raw, std::string_view plain) noexcept {
  std::size_t p = 0;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%' && i + 2 < raw.size() && hex_value(raw[i + 1]) >= 0 &&
               hex_value(raw[i + 2]) >= 0) {
      c = static_cast<char>(hex_value(raw[i + 1]) * 16 + hex_value(raw[i + 2]));
      i += 2;
    }
    if (p == plain.size() || plain[p] != c) return false;
    ++p;
  }
  return p == plain.size();
}

std::optional<std::string_view> find_query_param(std::string_view query,
                                                 std::string_view name) noexcept {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    const auto eq = pair.find('=');
    const std::string_view key = pair.substr(0, eq);
    if (!pair.empty() && query_component_equals(key, name)) {
      return eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::optional<std::string> query_param(std::string_view query, std::string_view name) {
  const auto raw = find_query_param(query, name);
  if (!raw) return std::nullopt;
  std::string value(raw->size(), '\0');
  value.resize(decode_query_component(*raw, value.data()));
  return value;
}

std::string normalize_host(std::string_view authority) {
  std::string_view host = authority;
  if (!host.empty() && host.front() == '[') {
    const auto close = host.find(']');
    if (close != std::string_view::npos) host = host.substr(0, close + 1);
  } else {
    // Exactly one ':' separates a port; an unbracketed IPv6 literal (invalid, but seen) is
    // left whole rather than cut at its last group.
    const auto colon = host.find(':');
    if (colon != std::string_view::npos && host.find(':', colon + 1) == std::string_view::npos) {
      host = host.substr(0, colon);
    }
    if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  }
  std::string out(host);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + ('a' - 'A'));
  }
  return out;
}

}  // namespace turnpike::http
