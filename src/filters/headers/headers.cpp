// `type: headers`: set, add and remove request headers (before the request goes upstream) and
// response headers (before the response goes to the client), with ${variables} in values.
#include <string>
#include <vector>

#include "turnpike/filters/registry.h"
#include "turnpike/filters/template.h"

namespace turnpike::filters {
namespace {

struct Op {
  std::string name;
  Template value;
};

struct Phase {
  std::vector<Op> set;
  std::vector<Op> add;
  std::vector<std::string> remove;

  void apply(http::HeaderMap& h, const RequestContext& ctx, const http::RequestHead& req) const {
    for (const auto& name : remove)
      h.remove(name);
    for (const auto& op : set)
      h.set(op.name, op.value.render(ctx, req));
    for (const auto& op : add)
      h.add(op.name, op.value.render(ctx, req));
  }
  bool empty() const noexcept { return set.empty() && add.empty() && remove.empty(); }
};

struct Settings final : config::FilterSettings {
  Phase request;
  Phase response;
};

// Names a client must not be able to have rewritten this way: the codecs own them.
bool reserved(std::string_view name) {
  return name == "host" || name == "content-length" || name == "transfer-encoding" ||
         name == "connection" || name.starts_with(':');
}

void parse_ops(config::Reader& r, const config::Node& n, std::vector<Op>& out) {
  const auto m = r.entries(n, true);
  if (!m) return;
  for (const auto& [key, value] : m->entries()) {
    auto name = r.header_name(value, key);
    auto text = r.header_value(value);
    if (!name || !text) continue;
    if (reserved(*name)) {
      r.error(value, "'" + *name + "' cannot be changed here (use a rewrite for the host)");
      continue;
    }
    auto parsed = Template::parse(*text);
    if (auto* err = std::get_if<std::string>(&parsed)) {
      r.error(value, *err);
      continue;
    }
    out.push_back({std::move(*name), std::get<Template>(std::move(parsed))});
  }
}

void parse_phase(config::Reader& r, const config::Node& n, Phase& p) {
  const auto m = r.map(n, {"set", "add", "remove"});
  if (!m) return;
  if (const auto* s = m->get("set")) parse_ops(r, *s, p.set);
  if (const auto* a = m->get("add")) parse_ops(r, *a, p.add);
  if (const auto* rm = m->get("remove")) {
    if (const auto items = r.list(*rm)) {
      for (const auto& item : *items) {
        auto name = r.header_name(item);
        if (!name) continue;
        if (reserved(*name))
          r.error(item, "'" + *name + "' cannot be removed");
        else
          p.remove.push_back(std::move(*name));
      }
    }
  }
}

std::shared_ptr<const config::FilterSettings> parse(config::Reader& r, const config::Node& block) {
  const auto m = r.map(block, {"type", "request", "response"});
  if (!m) return nullptr;
  auto s = std::make_shared<Settings>();
  if (const auto* q = m->get("request")) parse_phase(r, *q, s->request);
  if (const auto* p = m->get("response")) parse_phase(r, *p, s->response);
  if (m->entries().size() <= 1)  // only `type`
    r.warning(block, "changes no headers (set request: or response:)");
  return s;
}

class HeadersFilter final : public Filter {
 public:
  explicit HeadersFilter(const Settings& s) : s_(s) {}
  Status on_request_headers(http::RequestHead& req, StreamCallbacks& cb) override {
    req_ = &req;
    s_.request.apply(req.headers, cb.context(), req);
    return Status::Continue;
  }
  Status on_response_headers(http::ResponseHead& resp, StreamCallbacks& cb) override {
    if (req_ != nullptr) s_.response.apply(resp.headers, cb.context(), *req_);
    return Status::Continue;
  }

 private:
  const Settings& s_;
  const http::RequestHead* req_ = nullptr;
};

}  // namespace

void register_headers() {
  register_filter_type({"headers", parse, build_with<HeadersFilter, Settings>});
}

}  // namespace turnpike::filters
