// HTTP/1.1 message framing shared by the server and client connections: numbers into header
// text, and the gather buffers for one piece of body with identity or chunked encoding.
#pragma once

#include <array>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include <boost/asio/buffer.hpp>

namespace turnpike::http1 {

inline void append_decimal(std::string& s, std::uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  s.append(buf, end);
}

inline void append_hex(std::string& s, std::uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, 16);
  (void)ec;
  s.append(buf, end);
}

/// Appends "name: value\r\n" with one size check (header serialization runs for every message).
inline void append_field(std::string& s, std::string_view name, std::string_view value) {
  const std::size_t at = s.size();
  s.resize(at + name.size() + value.size() + 4);
  char* p = s.data() + at;
  std::memcpy(p, name.data(), name.size());
  p += name.size();
  *p++ = ':';
  *p++ = ' ';
  std::memcpy(p, value.data(), value.size());
  p += value.size();
  *p++ = '\r';
  *p = '\n';
}

using FrameBuffers = std::array<boost::asio::const_buffer, 3>;

/// Frames one piece of body after `prefix` (a message head, or empty): with chunked encoding the
/// chunk-size line is appended to `prefix`, and the chunk's CRLF (plus the last chunk when
/// `end`) follows the data. Fills `out` with what to write; returns how many buffers.
/// `prefix` and `body` must outlive the write.
inline std::size_t frame_body(std::string& prefix, std::span<const char> body, bool chunked,
                              bool end, FrameBuffers& out) {
  static constexpr std::string_view kCrlf = "\r\n";
  static constexpr std::string_view kCrlfLast = "\r\n0\r\n\r\n";
  static constexpr std::string_view kLast = "0\r\n\r\n";
  std::size_t n = 0;
  if (chunked && !body.empty()) {
    append_hex(prefix, body.size());
    prefix += kCrlf;
  }
  if (!prefix.empty()) out[n++] = boost::asio::buffer(prefix);
  if (!body.empty()) out[n++] = boost::asio::buffer(body.data(), body.size());
  if (chunked) {
    if (!body.empty())
      out[n++] = end ? boost::asio::buffer(kCrlfLast.data(), kCrlfLast.size())
                     : boost::asio::buffer(kCrlf.data(), kCrlf.size());
    else if (end)
      out[n++] = boost::asio::buffer(kLast.data(), kLast.size());
  }
  return n;
}

}  // namespace turnpike::http1
