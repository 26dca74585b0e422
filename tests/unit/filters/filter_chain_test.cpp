#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "turnpike/filters/filter.h"
#include "unit/filters/recording_callbacks.h"

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

using NullCallbacks = test_support::RecordingCallbacks;

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

// A response phase that suspends (`stop`) or answers locally (`reply`).
class ResponseFilter final : public Filter {
 public:
  ResponseFilter(std::string name, Trace& t, std::string mode)
      : name_(std::move(name)), t_(t), mode_(std::move(mode)) {}
  Status on_response_headers(http::ResponseHead& resp, StreamCallbacks& cb) override {
    t_.events.push_back(name_ + ".response." + std::to_string(resp.status));
    if (mode_ == "stop") return Status::Stop;
    if (mode_ == "reply") {
      cb.send_local_reply({502, "replaced", {}});
      return Status::Stop;
    }
    return Status::Continue;
  }
  void on_destroy() noexcept override { t_.events.push_back(name_ + ".destroy"); }

 private:
  std::string name_;
  Trace& t_;
  std::string mode_;
};

class ResponseConfig final : public FilterConfig {
 public:
  ResponseConfig(std::string name, Trace& t, std::string mode = "")
      : name_(std::move(name)), t_(t), mode_(std::move(mode)) {}
  std::unique_ptr<Filter> create() const override {
    return std::make_unique<ResponseFilter>(name_, t_, mode_);
  }

 private:
  std::string name_;
  Trace& t_;
  std::string mode_;
};

TEST(FilterChain, ResponsePhaseSuspendsAndResumesAtTheNextFilter) {
  Trace t;
  FilterChain chain;
  chain.add(std::make_shared<ResponseConfig>("a", t));
  chain.add(std::make_shared<ResponseConfig>("b", t, "stop"));
  chain.add(std::make_shared<ResponseConfig>("c", t));
  http::RequestHead req;
  http::ResponseHead resp;
  NullCallbacks cb;
  ActiveChain active(chain);
  EXPECT_EQ(active.run_request(req, cb), Status::Continue);
  EXPECT_EQ(active.run_response(resp, cb), Status::Stop);
  EXPECT_EQ(t.events, (std::vector<std::string>{"c.response.200", "b.response.200"}));
  // resume(): on with the filter before the one that suspended, never again through it.
  resp.status = 201;
  EXPECT_EQ(active.run_response(resp, cb), Status::Continue);
  EXPECT_EQ(t.events,
            (std::vector<std::string>{"c.response.200", "b.response.200", "a.response.201"}));
}

TEST(FilterChain, ALocalAnswerInTheResponsePhaseMeetsOnlyTheFiltersBeforeIt) {
  Trace t;
  FilterChain chain;
  chain.add(std::make_shared<ResponseConfig>("outer", t));
  chain.add(std::make_shared<ResponseConfig>("limit", t, "reply"));
  chain.add(std::make_shared<ResponseConfig>("inner", t));
  http::RequestHead req;
  http::ResponseHead upstream;
  NullCallbacks cb;
  ActiveChain active(chain);
  EXPECT_EQ(active.run_request(req, cb), Status::Continue);
  EXPECT_EQ(active.run_response(upstream, cb), Status::Stop);
  // The proxy sends the filter's answer instead; its response phase goes on from there.
  http::ResponseHead local;
  local.status = 502;
  EXPECT_EQ(active.run_response(local, cb), Status::Continue);
  EXPECT_EQ(t.events, (std::vector<std::string>{"inner.response.200", "limit.response.200",
                                                "outer.response.502"}));
}

TEST(FilterChain, CancelSuspendedTellsTheFilterToDropItsWork) {
  Trace t;
  {
    FilterChain chain;
    chain.add(std::make_shared<RecordingConfig>("first", t));
    chain.add(std::make_shared<RecordingConfig>("slow", t, /*stop=*/true));
    http::RequestHead req;
    http::ResponseHead resp;
    NullCallbacks cb;
    ActiveChain active(chain);
    EXPECT_EQ(active.run_request(req, cb), Status::Stop);
    active.cancel_suspended();  // the deadline passed: 504, without the slow filter
    EXPECT_EQ(active.run_response(resp, cb), Status::Continue);
  }
  EXPECT_EQ(t.events,
            (std::vector<std::string>{"first.request", "slow.request", "slow.destroy",
                                      "first.response", "first.destroy", "slow.destroy"}));

  Trace r;
  FilterChain chain;
  chain.add(std::make_shared<ResponseConfig>("a", r));
  chain.add(std::make_shared<ResponseConfig>("b", r, "stop"));
  http::RequestHead req;
  http::ResponseHead resp;
  NullCallbacks cb;
  ActiveChain active(chain);
  EXPECT_EQ(active.run_request(req, cb), Status::Continue);
  EXPECT_EQ(active.run_response(resp, cb), Status::Stop);
  active.cancel_suspended();
  EXPECT_EQ(r.events, (std::vector<std::string>{"b.response.200", "b.destroy"}));
  resp.status = 504;
  EXPECT_EQ(active.run_response(resp, cb), Status::Continue);
  EXPECT_EQ(r.events.back(), "a.response.504");
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
