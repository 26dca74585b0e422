// The codec-neutral request and response heads that HTTP/1.1 and HTTP/2 codecs both produce,
// and that filters, router and proxy read. Owned by one request on one worker.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "turnpike/http/header_map.h"

namespace turnpike::http {

enum class Protocol : std::uint8_t { Http10, Http11, Http2 };

struct RequestHead {
  std::string method;     // as received, e.g. "GET"
  std::string target;     // raw request-target as received
  std::string path;       // normalized path (see http/path.h); what routing sees and upstream gets
  std::string query;      // raw query without '?', may be empty
  std::string host;       // lower-cased host without port (from Host or :authority)
  std::string authority;  // Host header / :authority as received
  HeaderMap headers;      // end-to-end headers (hop-by-hop already removed by the codec)
  Protocol protocol = Protocol::Http11;
  std::optional<std::uint64_t> content_length;  // set when the body length is known
  bool has_body = false;                        // false: no body follows the head
  bool expect_continue = false;
  /// The protocol the client asks to switch to ("websocket"): HTTP/1.1 Upgrade with Connection:
  /// upgrade, or HTTP/2 extended CONNECT's :protocol (RFC 8441). Empty: none.
  std::string upgrade;
};

struct ResponseHead {
  int status = 200;
  std::string reason;  // empty: the standard reason phrase
  HeaderMap headers;   // end-to-end headers
  std::optional<std::uint64_t> content_length;
  bool has_body = true;
};

/// The gRPC status a gateway answers a gRPC request with in place of an HTTP error status:
/// gRPC's HTTP mapping, with the codes a gateway means (4 DEADLINE_EXCEEDED for 504, 8
/// RESOURCE_EXHAUSTED for 429).
int grpc_status_for(int http_status) noexcept;

/// Standard reason phrase for a status code ("Unknown" if none).
std::string_view reason_phrase(int status) noexcept;

/// True for headers that must not be forwarded (RFC 9110 section 7.6.1): Connection,
/// Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade.
bool is_hop_by_hop(std::string_view name) noexcept;

/// Removes hop-by-hop headers and every header named in Connection.
void strip_hop_by_hop(HeaderMap& headers);

/// Whether a trailer field may be forwarded: not a hop-by-hop, framing, routing or
/// authentication field (RFC 9110 section 6.5.1), which a recipient must not take from a
/// trailer section.
bool trailer_allowed(std::string_view name) noexcept;

}  // namespace turnpike::http
