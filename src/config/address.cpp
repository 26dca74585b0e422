#include "config/address.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace turnpike::config {

std::variant<HostPort, std::string> split_host_port(std::string_view text) {
  HostPort hp;
  std::string_view port;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return std::string("has no closing ']'");
    hp.host = std::string(text.substr(1, close - 1));
    hp.bracketed = true;
    if (close + 1 >= text.size() || text[close + 1] != ':') {
      return std::string("needs a port: '[" + hp.host + "]:PORT'");
    }
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::string("needs a port: 'HOST:PORT'");
    if (text.substr(0, colon).find(':') != std::string_view::npos) {
      return std::string("is an IPv6 address without brackets: write '[ADDRESS]:PORT'");
    }
    hp.host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
  }
  if (hp.host.empty()) return std::string("has an empty host");
  if (port.empty() || port.size() > 5) return std::string("has an invalid port");
  unsigned value = 0;
  for (const char c : port) {
    if (c < '0' || c > '9') return std::string("has an invalid port");
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value > 65535) return std::string("has a port out of range (1-65535)");
  hp.port = static_cast<std::uint16_t>(value);
  return hp;
}

bool is_ip_literal(const std::string& host, bool v6) {
  std::array<unsigned char, 16> buf{};
  return inet_pton(v6 ? AF_INET6 : AF_INET, host.c_str(), buf.data()) == 1;
}

bool is_unspecified(const std::string& ip) {
  return ip == "0.0.0.0" || ip == "::";
}

bool is_host_name(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  std::size_t label = 0;
  for (const char c : host) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
    if (!ok || ++label > 63) return false;
  }
  return label != 0;
}

Resolution resolve_host(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &list);
  if (rc != 0) {
    std::string reason = gai_strerror(rc);
    if (rc == EAI_SYSTEM) reason += std::string(": ") + std::strerror(errno);
    return {{}, std::move(reason)};
  }
  const addrinfo* chosen = nullptr;
  for (const addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET) {
      chosen = ai;
      break;
    }
    if (ai->ai_family == AF_INET6 && chosen == nullptr) chosen = ai;
  }
  std::array<char, INET6_ADDRSTRLEN> text{};
  const char* ok = nullptr;
  if (chosen != nullptr && chosen->ai_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(chosen->ai_addr);
    ok = inet_ntop(AF_INET, &sin->sin_addr, text.data(), text.size());
  } else if (chosen != nullptr) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(chosen->ai_addr);
    ok = inet_ntop(AF_INET6, &sin6->sin6_addr, text.data(), text.size());
  }
  freeaddrinfo(list);
  if (ok == nullptr) {
    return {{}, "no IPv4 or IPv6 address"};
  }
  return {text.data(), {}};
}

}  // namespace turnpike::config
