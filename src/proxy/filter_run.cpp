#include "proxy/filter_run.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace turnpike::proxy {

namespace asio = boost::asio;

// The first answer of a phase wins. (A filter that timed out was told to drop its work, so it
// does not call back; this also keeps a misbehaving one from touching a reply being sent.)
void ChainCallbacks::resume() {
  if (replied) return;
  resumed_ = true;
  event_.cancel();
}

void ChainCallbacks::send_local_reply(filters::LocalReply r) {
  if (replied) return;
  reply = std::move(r);
  if (reply.status < 100 || reply.status > 599) reply.status = 500;
  replied = true;
  event_.cancel();
}

asio::io_context& ChainCallbacks::io_context() {
  return static_cast<asio::io_context&>(
      asio::query(event_.get_executor(), asio::execution::context));
}

asio::awaitable<bool> ChainCallbacks::wait(std::chrono::milliseconds timeout) {
  if (!resumed_ && !replied) {
    event_.expires_after(timeout);
    co_await event_.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  const bool woken = resumed_ || replied;
  resumed_ = false;
  co_return woken;
}

asio::awaitable<bool> FilterRun::run_request(http::RequestHead& req,
                                             std::chrono::milliseconds timeout) {
  ChainCallbacks& cb = callbacks;
  for (;;) {
    if (cb.replied) break;
    if (chain.run_request(req, cb) == filters::Status::Continue) break;
    if (cb.replied) break;
    const bool woken = co_await cb.wait(timeout);
    if (!woken) {
      chain.cancel_suspended();
      cb.send_local_reply({504, "filter timed out", {}});
      break;
    }
  }
  if (cb.replied) chain.mark_replied();
  co_return cb.replied;
}

bool FilterRun::respond_now(http::ResponseHead& head) {
  callbacks.begin_phase();
  if (chain.run_response(head, callbacks) == filters::Status::Stop) return false;
  add_response_headers(head);
  return true;
}

asio::awaitable<bool> FilterRun::respond_later(http::ResponseHead& head,
                                               std::chrono::milliseconds timeout) {
  for (;;) {
    if (callbacks.replied) co_return true;
    const bool woken = co_await callbacks.wait(timeout);
    if (!woken) {
      chain.cancel_suspended();
      callbacks.send_local_reply({504, "filter timed out", {}});
      co_return true;
    }
    if (callbacks.replied) co_return true;
    if (chain.run_response(head, callbacks) == filters::Status::Continue) {
      add_response_headers(head);
      co_return false;
    }
  }
}

void FilterRun::add_response_headers(http::ResponseHead& head) {
  for (const auto& [name, value] : ctx.response_headers)
    head.headers.add(name, value);
}

}  // namespace turnpike::proxy
