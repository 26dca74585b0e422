#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "core/config_watcher.h"

namespace turnpike::core {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class ConfigWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) /
            ("watch_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "etc");
    fs::create_directories(root_ / "tls");
    config_ = (root_ / "etc" / "turnpike.yaml").string();
    cert_ = (root_ / "tls" / "api.pem").string();
    write(config_, "a");
    write(cert_, "a");
  }
  void TearDown() override { fs::remove_all(root_); }

  static void write(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
  }
  // Runs the loop for `d`, then returns how many callbacks arrived meanwhile.
  int run_for(std::chrono::milliseconds d) {
    const int before = calls_;
    io_.restart();
    io_.run_for(d);
    return calls_ - before;
  }
  ConfigWatcher make(std::vector<std::string> paths, std::chrono::milliseconds debounce = 50ms) {
    return ConfigWatcher(io_, std::move(paths), debounce, [this] { ++calls_; });
  }

  boost::asio::io_context io_;
  fs::path root_;
  std::string config_, cert_;
  int calls_ = 0;
};

TEST_F(ConfigWatcherTest, DebouncesABurstOfWritesIntoOneCallback) {
  auto w = make({config_}, 100ms);
  ASSERT_EQ(w.start(), "");
  // Five writes 20 ms apart: each restarts the quiet period, so one reload follows them.
  for (int i = 0; i < 5; ++i) {
    write(config_, "v" + std::to_string(i));
    EXPECT_EQ(run_for(20ms), 0);
  }
  EXPECT_EQ(run_for(300ms), 1);
  EXPECT_EQ(run_for(200ms), 0);  // quiet: nothing more
}

TEST_F(ConfigWatcherTest, WatchesEveryNamedFileAndIgnoresItsNeighbours) {
  auto w = make({config_, cert_});
  ASSERT_EQ(w.start(), "");
  write((root_ / "tls" / "other.pem").string(), "x");  // same directory, not named
  EXPECT_EQ(run_for(200ms), 0);
  write(cert_, "b");  // in place
  EXPECT_EQ(run_for(200ms), 1);
  // Write-temp-then-rename over the certificate.
  write(cert_ + ".tmp", "c");
  fs::rename(cert_ + ".tmp", cert_);
  EXPECT_EQ(run_for(200ms), 1);
}

TEST_F(ConfigWatcherTest, SetPathsFollowsTheFilesANewConfigNames) {
  auto w = make({config_, cert_});
  ASSERT_EQ(w.start(), "");
  ASSERT_EQ(w.set_paths({config_}), "");  // the reloaded config no longer names the cert
  write(cert_, "b");
  EXPECT_EQ(run_for(200ms), 0);
  write(config_, "b");
  EXPECT_EQ(run_for(200ms), 1);
  ASSERT_EQ(w.set_paths({config_, cert_}), "");
  write(cert_, "c");
  EXPECT_EQ(run_for(200ms), 1);
}

TEST_F(ConfigWatcherTest, FollowsAConfigMapSymlinkSwap) {
  // etc/live.yaml -> ..data/live.yaml, ..data -> v1; the update swaps ..data to v2.
  const fs::path etc = root_ / "etc";
  fs::create_directories(etc / "v1");
  fs::create_directories(etc / "v2");
  write((etc / "v1" / "live.yaml").string(), "a");
  write((etc / "v2" / "live.yaml").string(), "b");
  fs::create_directory_symlink("v1", etc / "..data");
  fs::create_symlink("..data/live.yaml", etc / "live.yaml");
  auto w = make({(etc / "live.yaml").string()});
  ASSERT_EQ(w.start(), "");
  fs::create_directory_symlink("v2", etc / "..data_tmp");
  fs::rename(etc / "..data_tmp", etc / "..data");
  EXPECT_EQ(run_for(200ms), 1);
}

TEST_F(ConfigWatcherTest, AnUnwatchableDirectoryIsReported) {
  auto w = make({config_, (root_ / "missing" / "key.pem").string()});
  const std::string err = w.start();
  EXPECT_NE(err.find("missing"), std::string::npos) << err;
  write(config_, "b");  // the rest is still watched
  EXPECT_EQ(run_for(200ms), 1);
}

}  // namespace
}  // namespace turnpike::core
