#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "turnpike/filters/filter.h"

namespace turnpike::filters {
namespace {

struct Trace {
  std::vector<std::string> events;
};

class RecordingFilter final : public Filter {
 public:
  RecordingFilter(std::string name, Trace& t, bool stop)
      : name_(std::move(name)), t_(t), stop_(stop) {}
  Status on_request_headers(http::RequestHead& req, StreamCallbacks&) override {
    t_.events.push_back(name_ + ".request");
    req.headers.add("x-seen-by", name_);
    return stop_ ? Status::Stop : Status::Continue;
  }
  Status on_response_headers(http::ResponseHead&, StreamCallbacks&) override {
    t_.events.push_back(name_ + ".response");
    return Status::Continue;
  }
  void on_complete(const http::ResponseHead& r) noexcept override {
    t_.events.push_back(name_ + ".complete." + std::to_string(r.status));
  }
  void on_destroy() noexcept override { t_.events.push_back(name_ + ".destroy"); }

 private:
  std::string name_;
  Trace& t_;
  bool stop_;
};

class RecordingConfig final : public FilterConfig {
 public:
  RecordingConfig(std::string name, Trace& t, bool stop = false)
      : name_(std::move(name)), t_(t), stop_(stop) {}
  std::unique_ptr<Filter> create() const override {
    return std::make_unique<RecordingFilter>(name_, t_, stop_);
  }

 private:
  std::string name_;
  Trace& t_;
  bool stop_;
};

class NullCallbacks final : public StreamCallbacks {
 public:
  void resume() override {}
  void send_local_reply(LocalReply) override {}
  RequestContext& context() override { return ctx_; }
  boost::asio::io_context& io_context() override { return io_; }
  unsigned worker_index() const override { return 0; }
  Upstreams& upstreams() override { return up_; }

 private:
  RequestContext ctx_;
  boost::asio::io_context io_;
  struct NoUpstreams final : Upstreams {
    void fetch(std::string_view, std::string, std::string, std::chrono::milliseconds, std::size_t,
               std::function<void(FetchResult)> done) override {
      done({0, "no upstreams in unit tests", {}, {}});
    }
  } up_;
};

TEST(FilterChain, RequestInOrderResponseInReverse) {
  Trace t;
  FilterChain chain;
  chain.add(std::make_shared<RecordingConfig>("a", t));
  chain.add(std::make_shared<RecordingConfig>("b", t));
  http::RequestHead req;
  http::ResponseHead resp;
  resp.status = 200;
  NullCallbacks cb;
  {
    ActiveChain active(chain);
    EXPECT_EQ(active.run_request(req, cb), Status::Continue);
    active.run_response(resp, cb);
    active.complete(resp);
  }
  EXPECT_EQ(t.events, (std::vector<std::string>{"a.request", "b.request", "b.response",
                                                "a.response", "a.complete.200", "b.complete.200",
                                                "a.destroy", "b.destroy"}));
  EXPECT_EQ(req.headers.count("x-seen-by"), 2u);
}

TEST(FilterChain, StopSuspendsAndResumesAtTheNextFilter) {
  Trace t;
  FilterChain chain;
  chain.add(std::make_shared<RecordingConfig>("auth", t, /*stop=*/true));
  chain.add(std::make_shared<RecordingConfig>("limit", t));
  http::RequestHead req;
  http::ResponseHead resp;
  NullCallbacks cb;
  ActiveChain active(chain);
  EXPECT_EQ(active.run_request(req, cb), Status::Stop);
  EXPECT_EQ(t.events, (std::vector<std::string>{"auth.request"}));
  // resume(): the chain continues after the filter that stopped.
  EXPECT_EQ(active.run_request(req, cb), Status::Continue);
  EXPECT_EQ(t.events, (std::vector<std::string>{"auth.request", "limit.request"}));
}

TEST(FilterChain, ResponsePhaseRunsOnlyForFiltersWhoseRequestPhaseRan) {
  Trace t;
  FilterChain chain;
  chain.add(std::make_shared<RecordingConfig>("first", t, /*stop=*/true));
  chain.add(std::make_shared<RecordingConfig>("second", t));
  http::RequestHead req;
  http::ResponseHead resp;
  NullCallbacks cb;
  ActiveChain active(chain);
  EXPECT_EQ(active.run_request(req, cb), Status::Stop);  // e.g. answered locally
  active.run_response(resp, cb);
  EXPECT_EQ(t.events, (std::vector<std::string>{"first.request", "first.response"}));
}

TEST(FilterChain, EmptyChainContinues) {
  FilterChain chain;
  http::RequestHead req;
  NullCallbacks cb;
  ActiveChain active(chain);
  EXPECT_TRUE(active.empty());
  EXPECT_EQ(active.run_request(req, cb), Status::Continue);
}

}  // namespace
}  // namespace turnpike::filters
