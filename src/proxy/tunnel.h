// A WebSocket tunnel after the upgrade: raw bytes both ways between the client's stream and
// the backend's, with half-closes passed on, until both directions end, either fails, or
// nothing moved for the route's websocket idle timeout. Owning worker thread only.
#pragma once

#include <chrono>

#include <boost/asio/awaitable.hpp>

#include "proxy/worker_context.h"
#include "turnpike/http/client_stream.h"
#include "turnpike/http/stream.h"

namespace turnpike::proxy {

boost::asio::awaitable<void> tunnel(http::ServerStream& s, http::ClientStream& up,
                                    std::chrono::milliseconds idle, BufferPool& buffers);

}  // namespace turnpike::proxy
