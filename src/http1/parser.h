// HTTP/1.1 message parsers: Beast's basic_parser driven straight into the codec-neutral
// RequestHead / ResponseHead (no intermediate beast::http::fields), with body bytes copied
// into a caller-provided bounded buffer. One parser per message; owning worker only.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include <boost/beast/http/basic_parser.hpp>

#include "turnpike/http/message.h"

namespace turnpike::http1 {

/// Body bytes land in the span set by set_output(); the parser stops when it is full.
template <bool IsRequest>
class BodySink : public boost::beast::http::basic_parser<IsRequest> {
 public:
  void set_output(std::span<char> out) noexcept {
    out_ = out;
    produced_ = 0;
  }
  std::size_t produced() const noexcept { return produced_; }
  bool output_full() const noexcept { return produced_ == out_.size(); }

 protected:
  std::size_t take(std::string_view body) noexcept;
  void on_body_init_impl(boost::optional<std::uint64_t> const&,
                         boost::system::error_code&) override {}
  std::size_t on_body_impl(boost::beast::string_view body, boost::system::error_code& ec) override;
  void on_chunk_header_impl(std::uint64_t, boost::beast::string_view,
                            boost::system::error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, boost::beast::string_view body,
                                 boost::system::error_code& ec) override;
  void on_finish_impl(boost::system::error_code&) override {}

 private:
  std::span<char> out_;
  std::size_t produced_ = 0;
};

/// Parses a request from a client.
class RequestParser final : public BodySink<true> {
 public:
  RequestParser(http::RequestHead& head, std::uint32_t max_headers) noexcept
      : head_(head), max_headers_(max_headers) {}

  bool too_many_headers() const noexcept { return too_many_headers_; }
  /// The Connection header's tokens, seen while parsing.
  bool connection_close() const noexcept { return conn_close_; }
  bool connection_keep_alive() const noexcept { return conn_keep_alive_; }
  bool connection_upgrade() const noexcept { return conn_upgrade_; }
  bool saw_transfer_encoding() const noexcept { return saw_te_; }
  bool saw_host() const noexcept { return host_count_ > 0; }
  int host_count() const noexcept { return host_count_; }
  int version() const noexcept { return version_; }
  /// A well-formed HTTP version other than 1.0 and 1.1 (answered 505, not 400).
  bool unsupported_version() const noexcept { return unsupported_version_; }
  /// Fields of a chunked body's trailer section (parsed after the body).
  const http::HeaderMap& trailers() const noexcept { return trailers_; }

 private:
  void on_request_impl(boost::beast::http::verb, boost::beast::string_view method,
                       boost::beast::string_view target, int version,
                       boost::system::error_code& ec) override;
  void on_response_impl(int, boost::beast::string_view, int, boost::system::error_code&) override {}
  void on_field_impl(boost::beast::http::field f, boost::beast::string_view name,
                     boost::beast::string_view value, boost::system::error_code& ec) override;
  void on_header_impl(boost::system::error_code& ec) override;

  http::RequestHead& head_;
  http::HeaderMap trailers_;
  std::uint32_t max_headers_;
  std::uint32_t fields_ = 0;
  int version_ = 11;
  int host_count_ = 0;
  bool header_done_ = false;
  bool too_many_headers_ = false;
  bool conn_close_ = false;
  bool conn_keep_alive_ = false;
  bool conn_upgrade_ = false;
  bool saw_te_ = false;
  bool unsupported_version_ = false;
};

/// Parses a response from an upstream.
class ResponseParser final : public BodySink<false> {
 public:
  ResponseParser(http::ResponseHead& head, std::uint32_t max_headers) noexcept
      : head_(head), max_headers_(max_headers) {}
  bool connection_close() const noexcept { return conn_close_; }
  int version() const noexcept { return version_; }
  /// Fields of a chunked body's trailer section (parsed after the body).
  const http::HeaderMap& trailers() const noexcept { return trailers_; }

 private:
  void on_request_impl(boost::beast::http::verb, boost::beast::string_view,
                       boost::beast::string_view, int, boost::system::error_code&) override {}
  void on_response_impl(int status, boost::beast::string_view reason, int version,
                        boost::system::error_code& ec) override;
  void on_field_impl(boost::beast::http::field f, boost::beast::string_view name,
                     boost::beast::string_view value, boost::system::error_code& ec) override;
  void on_header_impl(boost::system::error_code& ec) override;

  http::ResponseHead& head_;
  http::HeaderMap trailers_;
  std::uint32_t max_headers_;
  std::uint32_t fields_ = 0;
  int version_ = 11;
  bool conn_close_ = false;
  bool header_done_ = false;
};

/// Checks a complete header block for what Beast tolerates but we refuse (RFC 9112):
/// obs-fold (a line starting with SP/HTAB) and a bare LF line ending. Returns false if found.
bool header_block_is_strict(std::string_view block) noexcept;

/// Calls `fn(token)` for each comma-separated token of a header value, trimmed, lower-case
/// comparison left to the caller.
template <class Fn>
void for_each_token(std::string_view value, Fn&& fn) {
  std::size_t pos = 0;
  while (pos <= value.size()) {
    std::size_t comma = value.find(',', pos);
    if (comma == std::string_view::npos) comma = value.size();
    const std::string_view tok = http::trim_ows(value.substr(pos, comma - pos));
    if (!tok.empty()) fn(tok);
    pos = comma + 1;
  }
}

}  // namespace turnpike::http1
