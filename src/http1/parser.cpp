#include "http1/parser.h"

#include <cstring>

namespace turnpike::http1 {

namespace bhttp = boost::beast::http;
using boost::system::error_code;

template <bool IsRequest>
std::size_t BodySink<IsRequest>::take(std::string_view body) noexcept {
  std::size_t n = std::min(body.size(), out_.size() - produced_);
  if (n > 0) std::memcpy(out_.data() + produced_, body.data(), n);
  produced_ += n;
  return n;
}

template <bool IsRequest>
std::size_t BodySink<IsRequest>::on_body_impl(boost::beast::string_view body, error_code& ec) {
  std::size_t n = take(body);
  if (n == 0 && !body.empty()) ec = bhttp::error::need_buffer;
  return n;
}

template <bool IsRequest>
std::size_t BodySink<IsRequest>::on_chunk_body_impl(std::uint64_t, boost::beast::string_view body,
                                                    error_code& ec) {
  std::size_t n = take(body);
  if (n == 0 && !body.empty()) ec = bhttp::error::need_buffer;
  return n;
}

template class BodySink<true>;
template class BodySink<false>;

namespace {

// Records the Connection header's tokens that matter to the codec.
void scan_connection(std::string_view value, bool& close, bool& keep_alive, bool* upgrade) {
  for_each_token(value, [&](std::string_view tok) {
    if (http::iequals(tok, "close")) close = true;
    if (http::iequals(tok, "keep-alive")) keep_alive = true;
    if (upgrade && http::iequals(tok, "upgrade")) *upgrade = true;
  });
}

}  // namespace

void RequestParser::on_request_impl(bhttp::verb, boost::beast::string_view method,
                                    boost::beast::string_view target, int version, error_code& ec) {
  if (version != 10 && version != 11) {
    unsupported_version_ = true;
    ec = bhttp::error::bad_version;
    return;
  }
  version_ = version;
  head_.method.assign(method);
  head_.target.assign(target);
  head_.protocol = version == 10 ? http::Protocol::Http10 : http::Protocol::Http11;
}

void RequestParser::on_field_impl(bhttp::field f, boost::beast::string_view name,
                                  boost::beast::string_view value, error_code& ec) {
  if (++fields_ > max_headers_) {
    too_many_headers_ = true;
    ec = bhttp::error::header_limit;
    return;
  }
  if (header_done_) {  // the trailer section of a chunked body
    if (http::trailer_allowed(name)) trailers_.add(name, value);
    return;
  }
  switch (f) {
    case bhttp::field::connection:
    case bhttp::field::proxy_connection:
      scan_connection(value, conn_close_, conn_keep_alive_, &conn_upgrade_);
      break;
    case bhttp::field::host:
      ++host_count_;
      head_.authority.assign(value);
      break;
    case bhttp::field::transfer_encoding:
      saw_te_ = true;
      break;
    case bhttp::field::expect:
      if (http::iequals(value, "100-continue")) head_.expect_continue = true;
      break;
    case bhttp::field::content_length:
      return;  // framing is re-derived from the parser; never forwarded verbatim
    default:
      break;
  }
  head_.headers.add(name, value);
}

void RequestParser::on_header_impl(error_code&) {
  header_done_ = true;
  if (this->chunked()) {
    head_.has_body = true;
    head_.content_length.reset();
  } else if (auto len = this->content_length()) {
    head_.content_length = *len;
    head_.has_body = *len > 0;
  } else {
    head_.has_body = false;
  }
}

void ResponseParser::on_response_impl(int status, boost::beast::string_view reason, int version,
                                      error_code& ec) {
  if (version != 10 && version != 11) {
    ec = bhttp::error::bad_version;
    return;
  }
  version_ = version;
  head_.status = status;
  head_.reason.assign(reason);
}

void ResponseParser::on_field_impl(bhttp::field f, boost::beast::string_view name,
                                   boost::beast::string_view value, error_code& ec) {
  if (++fields_ > max_headers_) {
    ec = bhttp::error::header_limit;
    return;
  }
  if (header_done_) {  // the trailer section of a chunked body
    if (http::trailer_allowed(name)) trailers_.add(name, value);
    return;
  }
  if (f == bhttp::field::connection) {
    bool ka = false;
    scan_connection(value, conn_close_, ka, nullptr);
  } else if (f == bhttp::field::content_length) {
    return;
  }
  head_.headers.add(name, value);
}

void ResponseParser::on_header_impl(error_code&) {
  header_done_ = true;
  if (this->chunked()) {
    head_.content_length.reset();
  } else if (auto len = this->content_length()) {
    head_.content_length = *len;
  }
}

bool header_block_is_strict(std::string_view block) noexcept {
  const char* p = block.data();
  const char* end = p + block.size();
  while (p < end) {
    const void* hit = std::memchr(p, '\n', static_cast<std::size_t>(end - p));
    if (!hit) break;
    const char* lf = static_cast<const char*>(hit);
    if (lf == block.data() || lf[-1] != '\r') return false;             // bare LF
    if (lf + 1 < end && (lf[1] == ' ' || lf[1] == '\t')) return false;  // obs-fold
    p = lf + 1;
  }
  return true;
}

}  // namespace turnpike::http1
