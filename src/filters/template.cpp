#include "turnpike/filters/template.h"

#include <algorithm>

namespace turnpike::filters {

std::variant<Template, std::string> Template::parse(std::string_view text) {
  Template t;
  std::string literal;
  auto flush = [&] {
    if (!literal.empty()) t.parts_.push_back({Kind::Literal, std::move(literal)});
    literal.clear();
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '$') {
      literal += text[i];
      continue;
    }
    if (i + 1 < text.size() && text[i + 1] == '$') {
      literal += '$';
      ++i;
      continue;
    }
    if (i + 1 >= text.size() || text[i + 1] != '{') {
      literal += '$';
      continue;
    }
    const auto close = text.find('}', i + 2);
    if (close == std::string_view::npos) return "unterminated '${' (write '$$' for a literal '$')";
    const std::string_view name = text.substr(i + 2, close - i - 2);
    flush();
    static constexpr std::pair<std::string_view, Kind> kSimple[] = {
        {"client_ip", Kind::ClientIp}, {"request_id", Kind::RequestId},
        {"consumer", Kind::Consumer},  {"route", Kind::Route},
        {"listener", Kind::Listener},  {"host", Kind::Host},
        {"method", Kind::Method},      {"path", Kind::Path}};
    const auto* simple = std::find_if(std::begin(kSimple), std::end(kSimple),
                                      [&](const auto& p) { return p.first == name; });
    if (simple != std::end(kSimple)) {
      t.parts_.push_back({simple->second, {}});
    } else if (name.starts_with("jwt.claim.") && name.size() > 10) {
      t.parts_.push_back({Kind::Claim, std::string(name.substr(10))});
    } else if (name.starts_with("jwt.") && name.size() > 4) {
      t.parts_.push_back({Kind::Claim, std::string(name.substr(4))});
    } else if (name.starts_with("header.") && name.size() > 7) {
      std::string h(name.substr(7));
      std::transform(h.begin(), h.end(), h.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      t.parts_.push_back({Kind::Header, std::move(h)});
    } else {
      return "unknown variable '${" + std::string(name) +
             "}' (known: client_ip, request_id, consumer, route, listener, host, method, path, "
             "jwt.NAME, jwt.claim.NAME, header.NAME)";
    }
    i = close;
  }
  flush();
  return t;
}

std::string Template::render(const RequestContext& ctx, const http::RequestHead& req) const {
  if (parts_.size() == 1 && parts_[0].kind == Kind::Literal) return parts_[0].text;
  std::string out;
  for (const Part& p : parts_) {
    switch (p.kind) {
      case Kind::Literal:
        out += p.text;
        break;
      case Kind::ClientIp:
        out += ctx.client_ip.empty() ? ctx.client_address : ctx.client_ip;
        break;
      case Kind::RequestId:
        out += ctx.request_id;
        break;
      case Kind::Consumer:
        out += ctx.consumer;
        break;
      case Kind::Route:
        out += ctx.route;
        break;
      case Kind::Listener:
        out += ctx.listener;
        break;
      case Kind::Host:
        out += req.host;
        break;
      case Kind::Method:
        out += req.method;
        break;
      case Kind::Path:
        out += req.path;
        break;
      case Kind::Claim:
        if (const std::string* v = ctx.claim(p.text)) out += *v;
        break;
      case Kind::Header:
        if (const std::string* v = req.headers.get(p.text)) out += *v;
        break;
    }
  }
  // A variable may hold anything a client sent: never let it split a header.
  std::erase_if(out, [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
  return out;
}

}  // namespace turnpike::filters
