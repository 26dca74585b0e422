// Watches the config file, and the files it names (certificates, keys, JWKS files), for changes
// with inotify and calls back, debounced, on the control thread. It watches each file's
// directory (and the directory of the file a symlink points to), so an in-place write, an
// editor's write-temp-then-rename and a Kubernetes ConfigMap symlink swap all count. The callback
// reloads, and a reload of identical content is a no-op, so a spurious event costs one file
// read. Control thread only.
#pragma once

#include <array>
#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

namespace turnpike::core {

class ConfigWatcher {
 public:
  ConfigWatcher(boost::asio::io_context& io, std::vector<std::string> paths,
                std::chrono::milliseconds debounce, std::function<void()> on_change);
  ~ConfigWatcher();
  /// Starts watching; returns an error message (the daemon still runs without watching).
  std::string start();
  /// Watches these files from now on (after a reload changed the files the config names).
  /// Returns an error message for a directory that cannot be watched (the others still are).
  std::string set_paths(std::vector<std::string> paths);
  void set_debounce(std::chrono::milliseconds debounce) noexcept { debounce_ = debounce; }
  void stop();

 private:
  void read_events();
  void handle(const char* data, std::size_t n);

  std::vector<std::string> paths_;
  std::chrono::milliseconds debounce_;
  std::function<void()> on_change_;
  boost::asio::posix::stream_descriptor stream_;
  boost::asio::steady_timer timer_;
  int fd_ = -1;
  // Watched directories by watch descriptor, and the entries in them whose change matters.
  std::map<int, std::set<std::string>> names_;
  std::array<char, 8192> buf_{};
  bool stopped_ = false;
};

}  // namespace turnpike::core
