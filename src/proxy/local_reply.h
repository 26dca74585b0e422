// Answers the proxy gives itself: direct responses and redirects, gateway errors (a JSON body
// {"error", "request_id"}, or a trailers-only gRPC status for gRPC clients) and filters'
// answers. Each goes through the response phase of the filters that ran, exactly like an
// upstream response. Owning worker thread only.
#pragma once

#include <string_view>

#include <boost/asio/awaitable.hpp>

#include "proxy/request.h"
#include "turnpike/filters/filter.h"

namespace turnpike::proxy {

/// Sends `status` with `body`. When the response has already started it can only be cut off:
/// the stream is reset. When the client is gone, only the status is recorded.
boost::asio::awaitable<void> local_reply(RequestState& x, int status, std::string_view content_type,
                                         std::string_view body, const filters::HeaderList& extra);

/// A gateway error: {"error": error, "request_id": ...}, or the gRPC status for gRPC requests.
boost::asio::awaitable<void> error_reply(RequestState& x, int status, std::string_view error,
                                         const filters::HeaderList& extra);

/// A filter's own answer. By value: a later response phase may overwrite the callbacks' reply.
boost::asio::awaitable<void> filter_reply(RequestState& x, filters::LocalReply r);

bool is_grpc(const http::RequestHead& req) noexcept;

}  // namespace turnpike::proxy
