// The seam between codecs and the proxy. A server-side codec (HTTP/1.1, HTTP/2) turns each
// request into a ServerStream and hands it to a StreamHandler (implemented by the proxy, wired
// by core/). Body transfer is pull-based, so back-pressure is natural: the codec reads from the
// client only when the handler asks for more, and a send completes only when the codec has
// taken the bytes. The request body may be read while the response is sent (full duplex): one
// reading and one sending coroutine at a time. Owning worker thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include "turnpike/http/message.h"

namespace turnpike::http {

/// Facts about the downstream connection a stream arrived on.
struct ConnectionInfo {
  std::string client_address;  // IP literal of the peer
  std::uint16_t client_port = 0;
  std::string listener;           // listener name
  std::uint64_t listener_id = 0;  // the bound listener (stable across reloads that keep it)
  bool tls = false;
  std::string tls_version;  // "TLSv1.3" ...
  std::string sni;          // the server name the client asked for
  /// A verified client certificate (mTLS): subject (RFC 2253) and SAN names.
  std::string client_cert_subject;
  std::vector<std::string> client_cert_dns;
  std::vector<std::string> client_cert_uri;
  /// The listener forwards the client certificate as X-Forwarded-Client-Cert (and strips any
  /// the client sent); the element to send, empty without a verified certificate.
  bool forward_client_cert = false;
  std::string client_cert_xfcc;
  /// The listener's limits.body_timeout: how long a client may stall its request body before
  /// the response has started (408).
  std::chrono::milliseconds body_timeout{60'000};
};

struct BodyRead {
  boost::system::error_code ec;  // timed_out, connection reset, parse errors...
  std::size_t bytes = 0;
  bool last = false;  // the body is complete (bytes may be > 0 too)
};

/// Told when the client abandons a stream while its handler runs (an HTTP/2 RST_STREAM, or the
/// connection closing), so the handler can stop what it waits on (the upstream exchange).
class StreamObserver {
 public:
  virtual void on_client_reset() noexcept = 0;

 protected:
  ~StreamObserver() = default;
};

class ServerStream {
 public:
  virtual RequestHead& request() noexcept = 0;
  virtual const ConnectionInfo& connection() const noexcept = 0;
  /// Reads up to out.size() bytes of the decoded request body, waiting at most `timeout` for
  /// them (timed_out). Answers Expect: 100-continue on the first call. After a read that
  /// returned `last`, request_trailers() holds the trailer fields, if any.
  virtual boost::asio::awaitable<BodyRead> read_body(std::span<char> out,
                                                     std::chrono::milliseconds timeout) = 0;
  /// Body bytes the codec already holds, without I/O (and without answering 100-continue):
  /// what arrived with the request head. `last` when that is the whole body.
  virtual BodyRead read_buffered_body(std::span<char> out) = 0;
  /// Trailer fields that ended the request body (HTTP/2 trailers, an HTTP/1.1 chunked trailer
  /// section); null when none.
  virtual const HeaderMap* request_trailers() const noexcept { return nullptr; }
  /// Stops reading the request body: a pending read_body() completes with operation_aborted and
  /// the rest of the body is not wanted (HTTP/1.1 closes the connection after the response,
  /// lingering so the client can read it; HTTP/2 resets the stream with NO_ERROR once the
  /// response is complete).
  virtual void cancel_read() noexcept = 0;
  /// Sends the response head together with the first body bytes (may be empty). With
  /// end_stream the response is complete. Completes when the codec has taken the bytes.
  virtual boost::asio::awaitable<boost::system::error_code> send_response(
      ResponseHead& head, std::span<const char> body, bool end_stream) = 0;
  /// Sends more response body.
  virtual boost::asio::awaitable<boost::system::error_code> send_body(std::span<const char> body,
                                                                      bool end_stream) = 0;
  /// Ends the response with trailer fields (gRPC's grpc-status, say): HTTP/2 sends them as a
  /// trailing HEADERS frame; HTTP/1.1 as the trailer section of a chunked body (dropped when
  /// the body had a Content-Length, as HTTP/1.1 has nowhere to put them).
  virtual boost::asio::awaitable<boost::system::error_code> send_trailers(
      const HeaderMap& trailers) = 0;
  /// True once send_response() was called: from then on errors can only abort the stream.
  virtual bool response_started() const noexcept = 0;
  /// Registers (nullptr: removes) the observer, told when the client abandons the stream: an
  /// HTTP/2 RST_STREAM or the connection closing; HTTP/1.1 notices the close once the request
  /// body has been read (it keeps a read pending while the response is on its way).
  virtual void set_observer(StreamObserver* observer) noexcept = 0;
  /// Ends the stream abnormally (HTTP/1.1: close the connection; HTTP/2: RST_STREAM).
  virtual void reset() noexcept = 0;
  /// Bytes of request (head + body) received and response sent, for the access log.
  virtual std::uint64_t bytes_received() const noexcept = 0;
  virtual std::uint64_t bytes_sent() const noexcept = 0;

 protected:
  ~ServerStream() = default;
};

/// Serves one stream to completion. Implemented by the proxy; called by codecs.
class StreamHandler {
 public:
  virtual boost::asio::awaitable<void> serve(ServerStream& stream) = 0;
  /// The codec answered a request itself (malformed, over a limit, timed out) with `status`;
  /// called before that answer is written, so the request is still logged exactly once.
  virtual void on_rejected(const ConnectionInfo& conn, const RequestHead& partial, int status,
                           std::string_view details, std::uint64_t bytes_in,
                           std::uint64_t bytes_out) noexcept = 0;

 protected:
  ~StreamHandler() = default;
};

}  // namespace turnpike::http
