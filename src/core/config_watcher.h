// Watches the config file for changes with inotify and calls back, debounced, on the control
// thread. It watches the file's directory (and the directory of the file a symlink points to),
// so an in-place write, an editor's write-temp-then-rename and a Kubernetes ConfigMap symlink
// swap all count. The callback reloads, and a reload of identical content is a no-op, so a
// spurious event costs one file read. Control thread only.
#pragma once

#include <array>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

namespace turnpike::core {

class ConfigWatcher {
 public:
  ConfigWatcher(boost::asio::io_context& io, std::string path, std::chrono::milliseconds debounce,
                std::function<void()> on_change);
  ~ConfigWatcher();
  /// Starts watching; returns an error message (the daemon still runs without watching).
  std::string start();
  void stop();

 private:
  void read_events();
  void handle(const char* data, std::size_t n);

  std::string path_;
  std::chrono::milliseconds debounce_;
  std::function<void()> on_change_;
  boost::asio::posix::stream_descriptor stream_;
  boost::asio::steady_timer timer_;
  std::vector<std::string> names_;  // directory entries whose change matters
  std::array<char, 8192> buf_{};
  bool stopped_ = false;
};

}  // namespace turnpike::core
