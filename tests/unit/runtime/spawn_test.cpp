#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "support/spawn.h"

namespace turnpike::support {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

// Captures what the default logger says while it lives.
class LogCapture {
 public:
  LogCapture()
      : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64)),
        saved_(spdlog::default_logger()) {
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink_));
  }
  ~LogCapture() { spdlog::set_default_logger(saved_); }
  std::string text() const {
    std::string out;
    for (const auto& line : sink_->last_formatted())
      out += line;
    return out;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> saved_;
};

asio::awaitable<void> throws() {
  throw std::runtime_error("boom");
  co_return;
}

asio::awaitable<void> returns() {
  co_return;
}

asio::awaitable<int> throws_int() {
  throw std::runtime_error("no int");
  co_return 1;
}

TEST(LogException, LogsTheNameAndMessageThenRunsTheFailureAction) {
  LogCapture log;
  asio::io_context io;
  int closed = 0;
  asio::co_spawn(io, throws(), log_exception("test writer", [&] { ++closed; }));
  asio::co_spawn(io, throws_int(), log_exception("int coroutine"));
  io.run();
  EXPECT_EQ(closed, 1);
  EXPECT_NE(log.text().find("test writer: ended by an exception: boom"), std::string::npos)
      << log.text();
  EXPECT_NE(log.text().find("int coroutine: ended by an exception: no int"), std::string::npos)
      << log.text();
}

TEST(LogException, QuietOnANormalEnd) {
  LogCapture log;
  asio::io_context io;
  int closed = 0;
  asio::co_spawn(io, returns(), log_exception("quiet", [&] { ++closed; }));
  io.run();
  EXPECT_EQ(closed, 0);
  EXPECT_EQ(log.text(), "");
}

TEST(SpawnRestarting, RestartsAfterTheBackoffUntilTheCoroutineEndsNormally) {
  LogCapture log;
  asio::io_context io;
  int runs = 0;
  std::vector<std::chrono::steady_clock::time_point> starts;
  auto make = [&]() -> asio::awaitable<void> {
    starts.push_back(std::chrono::steady_clock::now());
    if (++runs < 3) throw std::runtime_error("accept failed");
    co_return;
  };
  spawn_restarting(io.get_executor(), "accept loop on 127.0.0.1:80", 20ms, make,
                   [] { return true; });
  io.run();
  ASSERT_EQ(runs, 3);
  EXPECT_GE(starts[1] - starts[0], 20ms);
  EXPECT_GE(starts[2] - starts[1], 20ms);
  const std::string text = log.text();
  EXPECT_NE(text.find("accept loop on 127.0.0.1:80: ended by an exception: accept failed; "
                      "restarting in 20 ms"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("accept loop on 127.0.0.1:80: restarted"), std::string::npos) << text;
}

TEST(SpawnRestarting, NotRestartedOnceNoLongerWanted) {
  LogCapture log;
  asio::io_context io;
  int runs = 0;
  bool wanted = true;
  auto make = [&]() -> asio::awaitable<void> {
    ++runs;
    wanted = false;  // e.g. the listener was removed meanwhile
    throw std::runtime_error("accept failed");
    co_return;
  };
  spawn_restarting(io.get_executor(), "loop", 1ms, make, [&] { return wanted; });
  io.run();
  EXPECT_EQ(runs, 1);
  EXPECT_NE(log.text().find("loop: not restarted"), std::string::npos) << log.text();
}

}  // namespace
}  // namespace turnpike::support
