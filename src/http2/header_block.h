// What the HTTP/2 server and client codecs share around nghttp2: building a header list from an
// http::HeaderMap (names lower-cased as HTTP/2 requires, connection-specific fields dropped) and
// draining a session's outgoing frames into a bounded write buffer. Owning worker thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include <nghttp2/nghttp2.h>

#include "turnpike/http/header_map.h"

namespace turnpike::http2 {

/// An nghttp2 header list. Values and names passed in must outlive the submit call; lower-cased
/// copies of mixed-case names are owned here (names already lower-case are not copied).
class HeaderBlock {
 public:
  HeaderBlock();
  ~HeaderBlock();
  void reserve(std::size_t n);
  /// One field as given (a pseudo-header, or a name known to be lower-case).
  void add(std::string_view name, std::string_view value);
  /// Every field of `fields` except the connection-specific ones (RFC 9113 section 8.2.2:
  /// connection, keep-alive, proxy-connection, transfer-encoding, upgrade, te) and
  /// content-length (the codecs write their own), and except the names in `skip`.
  /// Returns the bytes of names and values added (for accounting).
  std::size_t add_fields(const http::HeaderMap& fields,
                         std::initializer_list<std::string_view> skip = {});
  const nghttp2_nv* data() const noexcept;
  std::size_t size() const noexcept;

 private:
  std::vector<nghttp2_nv> nva_;
  std::deque<std::string> owned_;  // stable addresses
};

/// Appends the session's pending frames to `out` until it holds at least `max` bytes or nothing
/// is pending. Returns 0, or nghttp2's negative error code (the session is then unusable).
int append_frames(nghttp2_session* session, std::string& out, std::size_t max);

}  // namespace turnpike::http2
