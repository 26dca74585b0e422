// "host:port" parsing for listen addresses and upstream endpoints, and the blocking name
// resolution of endpoints (control thread only).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace turnpike::config {

struct HostPort {
  std::string host;  // without brackets
  std::uint16_t port = 0;
  bool bracketed = false;  // written as "[v6]:port"
};

/// Splits "host:port" / "[v6]:port". On failure returns the reason, phrased to follow "'x' ".
std::variant<HostPort, std::string> split_host_port(std::string_view text);

/// True when `host` is an IPv4 literal, or an IPv6 literal when `v6` is set.
bool is_ip_literal(const std::string& host, bool v6);

/// True for an unspecified address ("0.0.0.0", "::").
bool is_unspecified(const std::string& ip);

/// A syntactically valid DNS name (letters, digits, '-', '_', dot-separated non-empty labels).
bool is_host_name(std::string_view host);

struct Resolution {
  std::string address;  // IP literal; empty on failure
  std::string error;    // the resolver's message on failure
};

/// Resolves `host` with getaddrinfo, preferring the first IPv4 address, else the first IPv6
/// one (most backends listen on IPv4, and "localhost" often lists ::1 first). Blocking.
Resolution resolve_host(const std::string& host);

}  // namespace turnpike::config
