#include "turnpike/http/message.h"

#include <array>
#include <cstdint>
#include <vector>

namespace turnpike::http {

std::string_view reason_phrase(int status) noexcept {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 102:
      return "Processing";
    case 103:
      return "Early Hints";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 203:
      return "Non-Authoritative Information";
    case 204:
      return "No Content";
    case 205:
      return "Reset Content";
    case 206:
      return "Partial Content";
    case 207:
      return "Multi-Status";
    case 208:
      return "Already Reported";
    case 226:
      return "IM Used";
    case 300:
      return "Multiple Choices";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 305:
      return "Use Proxy";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 402:
      return "Payment Required";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 406:
      return "Not Acceptable";
    case 407:
      return "Proxy Authentication Required";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 411:
      return "Length Required";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 416:
      return "Range Not Satisfiable";
    case 417:
      return "Expectation Failed";
    case 418:
      return "I'm a teapot";
    case 421:
      return "Misdirected Request";
    case 422:
      return "Unprocessable Content";
    case 423:
      return "Locked";
    case 424:
      return "Failed Dependency";
    case 425:
      return "Too Early";
    case 426:
      return "Upgrade Required";
    case 428:
      return "Precondition Required";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 451:
      return "Unavailable For Legal Reasons";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    case 506:
      return "Variant Also Negotiates";
    case 507:
      return "Insufficient Storage";
    case 508:
      return "Loop Detected";
    case 510:
      return "Not Extended";
    case 511:
      return "Network Authentication Required";
    default:
      return "Unknown";
  }
}

bool is_hop_by_hop(std::string_view name) noexcept {
  // Dispatch on length first: most end-to-end names are rejected without comparing bytes.
  switch (name.size()) {
    case 2:
      return iequals(name, "te");
    case 7:
      return iequals(name, "trailer") || iequals(name, "upgrade");
    case 10:
      return iequals(name, "connection") || iequals(name, "keep-alive");
    case 16:
      return iequals(name, "proxy-connection");
    case 17:
      return iequals(name, "transfer-encoding");
    default:
      return false;
  }
}

namespace {

bool is_ows(char c) {
  return c == ' ' || c == '\t';
}

// True when `name` is one of the comma-separated tokens of a Connection header value.
bool names_in_connection(std::string_view value, std::string_view name) noexcept {
  while (!value.empty()) {
    const auto comma = value.find(',');
    std::string_view token = value.substr(0, comma);
    while (!token.empty() && is_ows(token.front()))
      token.remove_prefix(1);
    while (!token.empty() && is_ows(token.back()))
      token.remove_suffix(1);
    if (!token.empty() && iequals(token, name)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

void strip_hop_by_hop(HeaderMap& headers) {
  auto& entries = headers.entries();
  if (!headers.has("connection")) {
    std::erase_if(entries, [](const HeaderEntry& e) { return is_hop_by_hop(e.name); });
    return;
  }
  // Decide every entry before moving any: the Connection values being scanned are themselves
  // removed, so a single remove_if pass could overwrite them mid-scan. A stack bitmap covers
  // the default header-count limit without allocating.
  constexpr std::size_t kInline = 256;
  std::array<bool, kInline> inline_marks{};
  std::vector<bool> heap_marks;
  const bool use_heap = entries.size() > kInline;
  if (use_heap) heap_marks.assign(entries.size(), false);
  auto mark = [&](std::size_t i) {
    if (use_heap) {
      heap_marks[i] = true;
    } else {
      inline_marks[i] = true;
    }
  };
  auto marked = [&](std::size_t i) { return use_heap ? bool(heap_marks[i]) : inline_marks[i]; };

  std::size_t first_connection = 0;
  while (!iequals(entries[first_connection].name, "connection"))
    ++first_connection;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& name = entries[i].name;
    if (is_hop_by_hop(name)) {
      mark(i);
      continue;
    }
    for (std::size_t k = first_connection; k < entries.size(); ++k) {
      const auto& c = entries[k];
      if (iequals(c.name, "connection") && names_in_connection(c.value, name)) {
        mark(i);
        break;
      }
    }
  }
  std::size_t out = 0;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (marked(i)) continue;
    if (out != i) entries[out] = std::move(entries[i]);
    ++out;
  }
  entries.erase(entries.begin() + static_cast<std::ptrdiff_t>(out), entries.end());
}

int grpc_status_for(int http_status) noexcept {
  switch (http_status) {
    case 400:
      return 13;  // INTERNAL
    case 401:
      return 16;  // UNAUTHENTICATED
    case 403:
      return 7;  // PERMISSION_DENIED
    case 404:
      return 12;  // UNIMPLEMENTED
    case 408:
    case 504:
      return 4;  // DEADLINE_EXCEEDED
    case 413:
    case 414:
    case 429:
    case 431:
      return 8;  // RESOURCE_EXHAUSTED
    case 502:
    case 503:
      return 14;  // UNAVAILABLE
    default:
      return http_status >= 500 ? 13 : 2;  // INTERNAL, UNKNOWN
  }
}

bool trailer_allowed(std::string_view name) noexcept {
  static constexpr std::string_view kRefused[] = {
      "content-length", "content-type",  "content-encoding", "content-range",
      "host",           "authorization", "set-cookie",       "cookie",
      "expect",         "max-forwards",  "trailer"};
  if (is_hop_by_hop(name)) return false;
  for (std::string_view r : kRefused)
    if (iequals(name, r)) return false;
  return true;
}

}  // namespace turnpike::http
