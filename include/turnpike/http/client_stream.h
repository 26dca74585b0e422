// The seam between the proxy and the upstream codecs: one request/response exchange with a
// backend, whether it owns an HTTP/1.1 connection for its duration or is one stream of a
// multiplexed HTTP/2 connection. Pull-based like http::ServerStream, so back-pressure is
// natural both ways; every operation takes a deadline. Owning worker thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include "turnpike/http/message.h"
#include "turnpike/http/stream.h"

namespace turnpike::http {

class ClientStream {
 public:
  virtual ~ClientStream() = default;

  /// Sends the request head (`path_and_query` as the target) and the first body bytes (may be
  /// empty: the head goes out at once, whatever the body does later).
  virtual boost::asio::awaitable<boost::system::error_code> send_request(
      const RequestHead& head, std::string_view path_and_query, std::span<const char> body,
      bool end_stream, std::chrono::milliseconds timeout) = 0;
  /// More request body; with end_stream (and an empty body, too) the request ends.
  virtual boost::asio::awaitable<boost::system::error_code> send_body(
      std::span<const char> body, bool end_stream, std::chrono::milliseconds timeout) = 0;
  /// Ends the request with trailer fields (HTTP/2 trailers; an HTTP/1.1 chunked trailer
  /// section, or nothing when the request had a Content-Length).
  virtual boost::asio::awaitable<boost::system::error_code> send_trailers(
      const HeaderMap& trailers, std::chrono::milliseconds timeout) = 0;
  /// Reads the final response head (skipping 1xx, at most a few of them, all within
  /// `timeout`). `head_request`: no body follows.
  virtual boost::asio::awaitable<boost::system::error_code> read_response_head(
      ResponseHead& head, bool head_request, std::chrono::milliseconds timeout) = 0;
  /// Body bytes already received, without I/O.
  virtual BodyRead read_buffered_body(std::span<char> out) = 0;
  virtual boost::asio::awaitable<BodyRead> read_body(std::span<char> out,
                                                     std::chrono::milliseconds timeout) = 0;
  /// Trailer fields that ended the response (HTTP/2, gRPC's grpc-status); null when none.
  virtual const HeaderMap* trailers() const noexcept { return nullptr; }
  /// Response bytes received so far (0: a failure may be a stale pooled connection).
  virtual std::uint64_t response_bytes() const noexcept = 0;
  /// The backend refused the request without processing it (HTTP/2 REFUSED_STREAM, or a
  /// GOAWAY below its stream): safe to send again elsewhere, whatever the method.
  virtual bool refused() const noexcept { return false; }
  /// Abandons the exchange: HTTP/1.1 closes the connection, HTTP/2 resets the stream.
  virtual void close() noexcept = 0;
};

}  // namespace turnpike::http
