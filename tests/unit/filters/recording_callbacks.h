// The StreamCallbacks the filter unit tests run filters against: records the local reply and
// resume() calls, and runs a suspended filter to its end on an io_context.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <memory>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "turnpike/filters/filter.h"

namespace turnpike::filters::test_support {

/// Upstreams for filters that fetch nothing: every fetch fails at once.
struct NoUpstreams final : Upstreams {
  void fetch(std::string_view, std::string, std::string, std::chrono::milliseconds, std::size_t,
             std::function<void(FetchResult)> done) override {
    done({0, "no upstreams in unit tests", {}, {}});
  }
};

class RecordingCallbacks final : public StreamCallbacks {
 public:
  /// Its own io_context, and no upstreams.
  RecordingCallbacks()
      : own_io_(std::make_unique<boost::asio::io_context>()),
        io_(*own_io_),
        own_up_(std::make_unique<NoUpstreams>()),
        up_(*own_up_) {}
  RecordingCallbacks(boost::asio::io_context& io, Upstreams& up) : io_(io), up_(up) {}

  void resume() override { ++resumed; }
  void send_local_reply(LocalReply r) override {
    reply = std::move(r);
    replied = true;
  }
  RequestContext& context() override { return ctx; }
  boost::asio::io_context& io_context() override { return io_; }
  unsigned worker_index() const override { return worker; }
  Upstreams& upstreams() override { return up_; }

  /// Runs `f`'s request phase to its end, waiting on the io_context while it is suspended
  /// (at most 10 s): Continue when the request may go on.
  Status settle(Filter& f, http::RequestHead& req) {
    if (f.on_request_headers(req, *this) == Status::Continue) return Status::Continue;
    const auto guard = boost::asio::make_work_guard(io_);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!replied && resumed == 0 && std::chrono::steady_clock::now() < deadline)
      io_.run_one_for(std::chrono::milliseconds(50));
    EXPECT_TRUE(replied || resumed > 0) << "the filter never finished";
    return resumed > 0 && !replied ? Status::Continue : Status::Stop;
  }

  RequestContext ctx;
  LocalReply reply;
  bool replied = false;
  int resumed = 0;
  unsigned worker = 0;

 private:
  std::unique_ptr<boost::asio::io_context> own_io_;
  boost::asio::io_context& io_;
  std::unique_ptr<NoUpstreams> own_up_;
  Upstreams& up_;
};

}  // namespace turnpike::filters::test_support
