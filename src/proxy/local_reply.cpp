#include "proxy/local_reply.h"

#include "turnpike/http/date.h"

namespace turnpike::proxy {

namespace asio = boost::asio;

namespace {

std::string json_error(std::string_view error, std::string_view request_id) {
  std::string body = R"({"error":")";
  for (char c : error) {
    if (c == '"' || c == '\\') body += '\\';
    body += c;
  }
  body += R"(","request_id":")";
  body += request_id;
  body += "\"}";
  return body;
}

// grpc-message is percent-encoded (gRPC over HTTP/2 spec).
std::string grpc_message(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// A gateway answer to a gRPC client: HTTP 200 with the status in trailers-only form (one
// HEADERS block), never an HTML or JSON body a gRPC client cannot read.
void grpc_head(http::ResponseHead& head, int status, int grpc_code, std::string_view message) {
  head.status = 200;
  head.headers.add("content-type", "application/grpc");
  head.headers.add("grpc-status",
                   std::to_string(grpc_code >= 0 ? grpc_code : http::grpc_status_for(status)));
  head.headers.add("grpc-message", grpc_message(message));
  head.has_body = false;
}

}  // namespace

bool is_grpc(const http::RequestHead& req) noexcept {
  const std::string* ct = req.headers.get("content-type");
  return ct && ct->starts_with("application/grpc");
}

asio::awaitable<void> local_reply(RequestState& x, int status, std::string_view content_type,
                                  std::string_view body, const filters::HeaderList& extra) {
  x.status = status;
  if (x.client_gone) co_return;  // nobody to answer
  if (x.s.response_started()) {
    x.s.reset();
    co_return;
  }
  http::ResponseHead head;
  if (status >= 400 && is_grpc(x.req)) {
    grpc_head(head, status, x.grpc_code,
              x.grpc_error.empty() ? http::reason_phrase(status) : std::string_view(x.grpc_error));
    body = {};
  } else {
    head.status = status;
    head.headers.reserve(4 + extra.size());
    head.headers.add("Date", http::http_date_now());
    if (!content_type.empty()) head.headers.add("Content-Type", content_type);
    head.content_length = body.size();
    head.has_body = !body.empty();
  }
  for (const auto& [k, v] : extra)
    head.headers.add(k, v);
  bool replaced = false;
  const bool immediate = !x.filters || x.filters->respond_now(head);
  if (!immediate) replaced = co_await x.filters->respond_later(head, x.filter_timeout);
  if (replaced) {
    // A response phase answered instead; its answer meets only the filters before that one.
    co_await filter_reply(x, x.filters->callbacks.reply);
    co_return;
  }
  head.headers.add("X-Request-Id", x.request_id);
  co_await x.s.send_response(head, body, true);
}

asio::awaitable<void> error_reply(RequestState& x, int status, std::string_view error,
                                  const filters::HeaderList& extra) {
  x.grpc_error.assign(error);
  const std::string body = json_error(error, x.request_id);
  co_await local_reply(x, status, "application/json", body, extra);
}

asio::awaitable<void> filter_reply(RequestState& x, filters::LocalReply r) {
  if (r.status >= 400 || !r.error.empty()) {
    const std::string_view error =
        r.error.empty() ? http::reason_phrase(r.status) : std::string_view(r.error);
    co_await error_reply(x, r.status, error, r.headers);
  } else {
    co_await local_reply(x, r.status, std::string_view(), std::string_view(), r.headers);
  }
}

}  // namespace turnpike::proxy
