// One proxied request's exchange with its upstream, full duplex: the request head goes up as
// soon as the route's filters allow, the request body is pumped up by a child coroutine while
// the response head and body come down, each direction with its own back-pressure; trailers
// pass both ways. Named phases: begin an attempt (the body bytes already here, the endpoint, a
// pooled connection) and connect if none, send the head, receive the head, respond
// (response filters, head, body relay; or upgrade to a tunnel), stop (the upload, if the
// response ended first), join the children, release (pool or close the upstream), and
// answer_failure: the one place a failure becomes the client's answer.
//
// With routes[].request_buffering, a phase before all of these reads the request body (up to
// max_bytes) before an endpoint is picked, so a slow upload holds no upstream connection.
//
// Deadlines: routes[].timeout bounds the wait for the response head once the request has been
// sent; routes[].idle_timeout bounds body inactivity (no byte moving either way), so a stream
// is not cut while data flows; listeners[].limits.body_timeout bounds a client stalling its
// body before the response has started (408). Owning worker thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include "proxy/request.h"
#include "support/task_group.h"
#include "turnpike/http/client_stream.h"
#include "turnpike/router/route_table.h"
#include "upstream/cluster_pool.h"
#include "upstream/retry.h"

namespace turnpike::proxy {

class Exchange {
 public:
  using Clock = std::chrono::steady_clock;

  /// `target` is the path and query sent upstream.
  Exchange(RequestState& x, const router::Route& route, upstream::ClusterPool& pool,
           std::string target);
  ~Exchange();
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  boost::asio::awaitable<void> run();

  /// The client left (499); or the request's generation has to go. Both stop all I/O now.
  void client_gone() noexcept;
  void abort() noexcept;

 private:
  struct Failure {
    int status = 0;  // 0: none yet
    std::string_view error;
  };

  // Phases.
  boost::asio::awaitable<void> buffer_body();
  bool begin_attempt(bool first_attempt);
  boost::asio::awaitable<boost::system::error_code> connect();
  void start_upload();
  void note_failure(std::string_view what, std::string_view detail) noexcept;
  void refuse(upstream::Overflow why) noexcept;
  void fail_upstream(const boost::system::error_code& ec, bool per_try = false) noexcept;
  boost::asio::awaitable<bool> backoff(std::chrono::milliseconds wait, Clock::time_point deadline);
  void mirror();
  upstream::TryResult try_result(const boost::system::error_code& ec,
                                 bool connect_failed) const noexcept;
  bool replayable(bool connect_failed) const noexcept;
  bool retry_after(const boost::system::error_code& ec, bool connect_failed, bool timed_out_overall,
                   Clock::time_point head_deadline, upstream::RetryState& retry);
  void report_failure(const boost::system::error_code& ec, bool connect_failed) noexcept;
  boost::asio::awaitable<void> respond();
  boost::asio::awaitable<void> upgrade();
  void stop() noexcept;
  void release() noexcept;
  boost::asio::awaitable<void> answer_failure();

  // Children, joined by finish().
  boost::asio::awaitable<void> upload();
  boost::asio::awaitable<void> watchdog();

  void fail(int status, std::string_view error) noexcept;
  void touch() noexcept { last_activity_ = Clock::now(); }
  void wake_watchdog() noexcept;
  std::chrono::milliseconds op_timeout(std::chrono::milliseconds own) const noexcept;
  // The request body bytes that go up with the head: buffered ones, or those that came with it.
  const char* first_data() const noexcept { return held_ ? held_.get() : buf_.get(); }

  RequestState& x_;
  const router::Route& route_;
  const config::Route& rc_;
  upstream::ClusterPool& pool_;
  std::string target_;
  std::unique_ptr<char[]> buf_;  // the response's buffer (and the first request bytes)
  upstream::EndpointState* ep_ = nullptr;
  std::shared_ptr<http::ClientStream> conn_;
  http::ResponseHead resp_;
  http::BodyRead first_;          // request body bytes that came with the head (or were buffered)
  std::unique_ptr<char[]> held_;  // routes[].request_buffering: the body read before upstream
  Failure failure_;
  upstream::Overflow overflow_ = upstream::Overflow::None;  // refused by this cluster limit
  upstream::ConnectWait wait_;  // a wait for a connection at max_connections: fail() ends it
  bool retrying_ = false;       // a retry in flight (counted against max_retries)
  // Only while the request body streams up (most requests have none): constructing timers per
  // request is not free.
  std::optional<support::TaskGroup> children_;
  std::optional<boost::asio::steady_timer> timer_;  // the watchdog's
  Clock::time_point up_start_{};
  Clock::time_point last_activity_{};
  Clock::time_point client_wait_since_{};
  Clock::time_point upload_ended_at_{};
  Clock::time_point watch_until_{};  // what the watchdog's timer waits for
  std::uint64_t body_bytes_ = 0;
  std::uint64_t resp_limit_ = 0;
  bool reused_ = false;             // the lease was a pooled connection
  bool buffered_ = false;           // buffer_body() ran: first_ holds what it read
  bool buffering_ = false;          // buffer_body() waits for the client's body bytes
  bool pumping_ = false;            // upload() runs
  bool pump_waits_client_ = false;  // upload() waits for the client's next body bytes
  bool pump_sends_last_ = false;    // upload() sends the body's end: let it finish
  bool upload_done_ = false;        // the whole request reached the upstream codec
  bool upload_ended_ = false;       // done, or failed on the upstream side
  bool head_received_ = false;
  bool response_done_ = false;  // the response reached the client complete
  bool stopping_ = false;
};

}  // namespace turnpike::proxy
