// IP addresses and CIDR ranges (IPv4 and IPv6) for ip_filter and authz. An IPv4-mapped IPv6
// address (::ffff:10.0.0.1) is the IPv4 address it maps.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace turnpike::config {
class Reader;
class Node;
}  // namespace turnpike::config

namespace turnpike::filters {

struct IpAddress {
  std::array<std::uint8_t, 16> bytes{};  // IPv4 in the first 4
  bool v4 = false;
};

std::optional<IpAddress> parse_ip(std::string_view text);

struct Cidr {
  IpAddress base;
  unsigned prefix = 0;
  bool contains(const IpAddress& ip) const noexcept;
};

/// "10.0.0.0/8", "2001:db8::/32", or a single address ("192.0.2.1" is /32). nullopt when
/// malformed or when bits are set past the prefix ("10.0.0.1/8" is a typo, not a range).
std::optional<Cidr> parse_cidr(std::string_view text, std::string* error = nullptr);

class CidrSet {
 public:
  void add(const Cidr& c) { ranges_.push_back(c); }
  bool empty() const noexcept { return ranges_.empty(); }
  bool contains(const IpAddress& ip) const noexcept;
  bool contains(std::string_view ip) const noexcept;

 private:
  std::vector<Cidr> ranges_;
};

/// A filter setting that lists ranges (`allow: [10.0.0.0/8, "2001:db8::/32"]`): each entry is
/// added to `out` or reported at its own line:column; `allow_empty: false` also reports `[]`.
void read_cidrs(config::Reader& r, const config::Node& n, CidrSet& out, bool allow_empty = true);

}  // namespace turnpike::filters
