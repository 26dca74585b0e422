#include "turnpike/filters/cidr.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "turnpike/config/reader.h"

namespace turnpike::filters {

std::optional<IpAddress> parse_ip(std::string_view text) {
  if (text.empty() || text.size() > 64) return std::nullopt;
  if (text.front() == '[' && text.back() == ']') text = text.substr(1, text.size() - 2);
  const std::string s(text);
  IpAddress ip;
  if (inet_pton(AF_INET, s.c_str(), ip.bytes.data()) == 1) {
    ip.v4 = true;
    return ip;
  }
  if (inet_pton(AF_INET6, s.c_str(), ip.bytes.data()) != 1) return std::nullopt;
  static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(ip.bytes.data(), kMapped, 12) == 0) {
    std::memmove(ip.bytes.data(), ip.bytes.data() + 12, 4);
    std::fill(ip.bytes.begin() + 4, ip.bytes.end(), 0);
    ip.v4 = true;
  }
  return ip;
}

bool Cidr::contains(const IpAddress& ip) const noexcept {
  if (ip.v4 != base.v4) return false;
  unsigned bits = prefix;
  for (std::size_t i = 0; bits > 0; ++i) {
    const unsigned take = std::min(bits, 8u);
    const std::uint8_t mask = static_cast<std::uint8_t>(0xff << (8 - take));
    if ((ip.bytes[i] & mask) != (base.bytes[i] & mask)) return false;
    bits -= take;
  }
  return true;
}

std::optional<Cidr> parse_cidr(std::string_view text, std::string* error) {
  auto fail = [&](std::string msg) -> std::optional<Cidr> {
    if (error) *error = std::move(msg);
    return std::nullopt;
  };
  const auto slash = text.find('/');
  const auto ip = parse_ip(text.substr(0, slash));
  if (!ip) return fail("'" + std::string(text) + "' is not an IP address or CIDR range");
  Cidr c;
  c.base = *ip;
  const unsigned max = ip->v4 ? 32 : 128;
  c.prefix = max;
  if (slash != std::string_view::npos) {
    const std::string_view p = text.substr(slash + 1);
    if (p.empty() || p.size() > 3 ||
        !std::all_of(p.begin(), p.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
      return fail("'" + std::string(text) + "' has an invalid prefix length");
    c.prefix = static_cast<unsigned>(std::stoul(std::string(p)));
    if (c.prefix > max)
      return fail("'" + std::string(text) + "': the prefix length is at most " +
                  std::to_string(max));
  }
  // Bits past the prefix must be zero.
  for (unsigned bit = c.prefix; bit < max; ++bit) {
    if (c.base.bytes[bit / 8] & (0x80 >> (bit % 8)))
      return fail("'" + std::string(text) + "' has bits set past the /" + std::to_string(c.prefix) +
                  " prefix");
  }
  return c;
}

bool CidrSet::contains(const IpAddress& ip) const noexcept {
  return std::any_of(ranges_.begin(), ranges_.end(), [&](const Cidr& c) { return c.contains(ip); });
}

bool CidrSet::contains(std::string_view ip) const noexcept {
  const auto parsed = parse_ip(ip);
  return parsed && contains(*parsed);
}

void read_cidrs(config::Reader& r, const config::Node& n, CidrSet& out, bool allow_empty) {
  const auto items = r.list(n);
  if (!items) return;
  for (const auto& item : *items) {
    const auto s = r.string(item);
    if (!s) continue;
    std::string err;
    if (const auto c = parse_cidr(*s, &err))
      out.add(*c);
    else
      r.error(item, err);
  }
  if (items->empty() && !allow_empty) r.error(n, "list at least one range (or leave the key out)");
}

}  // namespace turnpike::filters
