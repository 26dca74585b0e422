// `type: request_size`: per-route limits tighter than the listener's: the request body (413,
// before any byte goes upstream when Content-Length says so, else while it streams), the
// request head's size and its number of header fields (431); and the upstream's response body
// (502 from the response phase when its Content-Length says so, else cut off while streaming).
#include <algorithm>
#include <optional>

#include "turnpike/filters/registry.h"

namespace turnpike::filters {
namespace {

struct Settings final : config::FilterSettings {
  std::optional<std::uint64_t> max_body_bytes;
  std::optional<std::uint64_t> max_header_bytes;
  std::optional<std::uint64_t> max_headers;
  std::optional<std::uint64_t> max_response_body_bytes;
};

constexpr std::uint64_t kGiB = 1024ull * 1024 * 1024;

std::shared_ptr<const config::FilterSettings> parse(config::Reader& r, const config::Node& block) {
  const auto m = r.map(block, {"type", "max_body_bytes", "max_header_bytes", "max_headers",
                               "max_response_body_bytes"});
  if (!m) return nullptr;
  auto s = std::make_shared<Settings>();
  if (const auto* n = m->get("max_body_bytes")) s->max_body_bytes = r.size(*n, 0, 64 * kGiB);
  if (const auto* n = m->get("max_header_bytes")) s->max_header_bytes = r.size(*n, 64, 1 << 20);
  if (const auto* n = m->get("max_headers")) {
    if (const auto i = r.integer(*n, 1, 10'000)) s->max_headers = static_cast<std::uint64_t>(*i);
  }
  if (const auto* n = m->get("max_response_body_bytes"))
    s->max_response_body_bytes = r.size(*n, 0, 64 * kGiB);
  if (m->entries().size() <= 1)  // only `type`
    r.error(block,
            "set at least one of max_body_bytes, max_header_bytes, max_headers, "
            "max_response_body_bytes");
  return s;
}

// The request line and header fields as HTTP/1.1 would carry them.
std::uint64_t head_bytes(const http::RequestHead& req) {
  std::uint64_t n = req.method.size() + req.target.size() + 12;
  for (const auto& h : req.headers)
    n += h.name.size() + h.value.size() + 4;
  return n;
}

void tighten(std::optional<std::uint64_t>& limit, std::uint64_t to) {
  limit = limit ? std::min(*limit, to) : to;
}

class RequestSizeFilter final : public Filter {
 public:
  explicit RequestSizeFilter(const Settings& s) : s_(s) {}
  Status on_request_headers(http::RequestHead& req, StreamCallbacks& cb) override {
    if ((s_.max_headers && req.headers.size() > *s_.max_headers) ||
        (s_.max_header_bytes && head_bytes(req) > *s_.max_header_bytes)) {
      cb.send_local_reply({431, "request header fields too large", {}});
      return Status::Stop;
    }
    if (s_.max_body_bytes) {
      if (req.content_length && *req.content_length > *s_.max_body_bytes) {
        cb.send_local_reply({413, "request body too large", {}});
        return Status::Stop;
      }
      tighten(cb.context().max_body_bytes, *s_.max_body_bytes);
    }
    if (s_.max_response_body_bytes)
      tighten(cb.context().max_response_body_bytes, *s_.max_response_body_bytes);
    return Status::Continue;
  }

  // The upstream says how large its body is: refuse it before a byte goes to the client. (The
  // limit in the context catches a body without Content-Length while it streams.)
  Status on_response_headers(http::ResponseHead& resp, StreamCallbacks& cb) override {
    if (s_.max_response_body_bytes && resp.has_body && resp.content_length &&
        *resp.content_length > *s_.max_response_body_bytes) {
      cb.send_local_reply({502, "upstream response too large", {}});
      return Status::Stop;
    }
    return Status::Continue;
  }

 private:
  const Settings& s_;
};

}  // namespace

void register_request_size() {
  register_filter_type({"request_size", parse, build_with<RequestSizeFilter, Settings>});
}

}  // namespace turnpike::filters
