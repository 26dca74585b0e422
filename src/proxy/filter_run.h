// A request's filters (the listener's, then the route's): the per-request filter objects, the
// context they share, and the callbacks through which a suspended filter resumes the request
// or answers it. Owning worker thread only.
#pragma once

#include <chrono>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include "turnpike/filters/filter.h"

namespace turnpike::proxy {

// The filter chain's view of the stream. A filter that suspends (Status::Stop) later calls
// resume() or send_local_reply() on the same worker; wait() parks the request until then.
class ChainCallbacks final : public filters::StreamCallbacks {
 public:
  ChainCallbacks(const boost::asio::any_io_executor& ex, filters::RequestContext& ctx,
                 unsigned worker, filters::Upstreams& up)
      : event_(ex), ctx_(ctx), up_(up), worker_(worker) {}

  void resume() override;
  void send_local_reply(filters::LocalReply r) override;
  filters::RequestContext& context() override { return ctx_; }
  boost::asio::io_context& io_context() override;
  unsigned worker_index() const override { return worker_; }
  filters::Upstreams& upstreams() override { return up_; }

  /// Parks until resume() or send_local_reply(); false when `timeout` passed first.
  boost::asio::awaitable<bool> wait(std::chrono::milliseconds timeout);

  /// A new phase (the response phase after the request phase) may answer again.
  void begin_phase() noexcept {
    replied = false;
    resumed_ = false;
  }

  filters::LocalReply reply;
  bool replied = false;

 private:
  boost::asio::steady_timer event_;
  filters::RequestContext& ctx_;
  filters::Upstreams& up_;
  unsigned worker_;
  bool resumed_ = false;
};

struct FilterRun {
  FilterRun(const boost::asio::any_io_executor& ex, unsigned worker, filters::Upstreams& up)
      : callbacks(ex, ctx, worker, up) {}
  filters::ActiveChain chain;
  filters::RequestContext ctx;
  ChainCallbacks callbacks;

  /// The request phase from where the chain stands, parking while a filter is suspended; the
  /// chain shares `timeout` across its suspensions. True when a filter answered (the reply is
  /// in callbacks.reply; a filter that did not finish in time answered 504).
  boost::asio::awaitable<bool> run_request(http::RequestHead& req,
                                           std::chrono::milliseconds timeout);

  /// The response phase, for any response: upstream or local. Usually no filter suspends or
  /// answers, and respond_now() does it all without a coroutine frame (true); otherwise
  /// respond_later() finishes it. A filter's answer, or a 504 when one did not finish within
  /// the timeout, is then in callbacks.reply, and the caller sends it rather than `head`.
  bool respond_now(http::ResponseHead& head);
  /// After respond_now() returned false: true when a filter's answer replaces `head`.
  boost::asio::awaitable<bool> respond_later(http::ResponseHead& head,
                                             std::chrono::milliseconds timeout);

 private:
  void add_response_headers(http::ResponseHead& head);
};

}  // namespace turnpike::proxy
