// `type: ip_filter`: allow and deny lists of CIDR ranges (IPv4 and IPv6) checked against the
// client address. Behind a load balancer, `trusted_proxies` names the proxies whose
// X-Forwarded-For is believed: the client is the right-most address in the chain that is not
// a trusted proxy. The result becomes the request's client_ip for every later filter
// (${client_ip}, rate limits by client_ip, authz CIDR rules).
#include <string>
#include <vector>

#include "turnpike/filters/cidr.h"
#include "turnpike/filters/registry.h"

namespace turnpike::filters {
namespace {

struct Settings final : config::FilterSettings {
  CidrSet allow;
  CidrSet deny;
  CidrSet trusted_proxies;
  int status = 403;
};

std::shared_ptr<const config::FilterSettings> parse(config::Reader& r, const config::Node& block) {
  const auto m = r.map(block, {"type", "allow", "deny", "trusted_proxies", "status"});
  if (!m) return nullptr;
  auto s = std::make_shared<Settings>();
  if (const auto* n = m->get("allow")) read_cidrs(r, *n, s->allow);
  if (const auto* n = m->get("deny")) read_cidrs(r, *n, s->deny);
  if (const auto* n = m->get("trusted_proxies")) read_cidrs(r, *n, s->trusted_proxies);
  if (const auto* n = m->get("status")) {
    if (const auto st = r.integer(*n, 400, 499)) s->status = static_cast<int>(*st);
  }
  if (!m->get("allow") && !m->get("deny") && !m->get("trusted_proxies"))
    r.error(block, "set at least one of allow, deny, trusted_proxies");
  return s;
}

// The client behind trusted proxies: walk X-Forwarded-For from the right (the entry the
// nearest proxy appended) while the address is a trusted proxy. Every X-Forwarded-For field
// counts, in order. Returns the peer itself when it is not trusted.
std::string client_behind_proxies(const CidrSet& trusted, const std::string& peer,
                                  const http::HeaderMap& headers) {
  const auto peer_ip = parse_ip(peer);
  if (!peer_ip || !trusted.contains(*peer_ip)) return peer;
  std::vector<std::string_view> chain;
  for (const auto& h : headers) {
    if (!http::iequals(h.name, "x-forwarded-for")) continue;
    std::string_view v = h.value;
    while (!v.empty()) {
      const auto comma = v.find(',');
      chain.push_back(http::trim_ows(v.substr(0, comma)));
      v = comma == std::string_view::npos ? std::string_view{} : v.substr(comma + 1);
    }
  }
  std::string client = peer;
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const auto ip = parse_ip(*it);
    if (!ip) break;  // garbage: trust nothing further left
    client.assign(*it);
    if (client.front() == '[') client = client.substr(1, client.size() - 2);
    if (!trusted.contains(*ip)) break;
  }
  return client;
}

class IpFilter final : public Filter {
 public:
  explicit IpFilter(const Settings& s) : s_(s) {}
  Status on_request_headers(http::RequestHead& req, StreamCallbacks& cb) override {
    RequestContext& ctx = cb.context();
    if (!s_.trusted_proxies.empty())
      ctx.client_ip = client_behind_proxies(s_.trusted_proxies, ctx.client_address, req.headers);
    const auto ip = parse_ip(ctx.client_ip.empty() ? ctx.client_address : ctx.client_ip);
    if (!ip) {
      cb.send_local_reply({s_.status, "address not allowed", {}});
      return Status::Stop;
    }
    if (s_.deny.contains(*ip)) {
      cb.send_local_reply({s_.status, "address denied", {}});
      return Status::Stop;
    }
    if (!s_.allow.empty() && !s_.allow.contains(*ip)) {
      cb.send_local_reply({s_.status, "address not allowed", {}});
      return Status::Stop;
    }
    return Status::Continue;
  }

 private:
  const Settings& s_;
};

}  // namespace

void register_ip_filter() {
  register_filter_type({"ip_filter", parse, build_with<IpFilter, Settings>});
}

}  // namespace turnpike::filters
