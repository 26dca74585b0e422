#include "core/config_watcher.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>

namespace turnpike::core {

namespace {

std::string dir_of(const std::string& p) {
  auto slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}

std::string base_of(const std::string& p) {
  auto slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

constexpr std::uint32_t kMask =
    IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_ATTRIB;

}  // namespace

ConfigWatcher::ConfigWatcher(boost::asio::io_context& io, std::vector<std::string> paths,
                             std::chrono::milliseconds debounce, std::function<void()> on_change)
    : paths_(std::move(paths)),
      debounce_(debounce),
      on_change_(std::move(on_change)),
      stream_(io),
      timer_(io) {}

ConfigWatcher::~ConfigWatcher() {
  stop();
}

std::string ConfigWatcher::start() {
  fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd_ < 0) return std::string("inotify_init1: ") + std::strerror(errno);
  stream_.assign(fd_);
  std::string err = set_paths(paths_);
  read_events();
  return err;
}

std::string ConfigWatcher::set_paths(std::vector<std::string> paths) {
  paths_ = std::move(paths);
  if (fd_ < 0 || stopped_) return {};
  // Directory -> entries: each path's own directory and name, and where its symlinks lead.
  std::map<std::string, std::set<std::string>> want;
  for (const auto& p : paths_) {
    want[dir_of(p)].insert(base_of(p));
    char real[PATH_MAX];
    if (::realpath(p.c_str(), real)) want[dir_of(real)].insert(base_of(real));
  }
  std::map<int, std::set<std::string>> next;
  std::string error;
  for (const auto& [dir, names] : want) {
    // Adding a watch on a directory already watched returns its existing descriptor.
    int wd = ::inotify_add_watch(fd_, dir.c_str(), kMask);
    if (wd < 0) {
      if (error.empty()) error = "inotify_add_watch " + dir + ": " + std::strerror(errno);
      continue;
    }
    next[wd].insert(names.begin(), names.end());
  }
  for (const auto& [wd, names] : names_)
    if (!next.contains(wd)) ::inotify_rm_watch(fd_, wd);
  names_ = std::move(next);
  return error;
}

void ConfigWatcher::stop() {
  stopped_ = true;
  boost::system::error_code ignored;
  timer_.cancel();
  if (stream_.is_open()) stream_.close(ignored);
  fd_ = -1;
  names_.clear();
}

void ConfigWatcher::read_events() {
  stream_.async_read_some(boost::asio::buffer(buf_),
                          [this](const boost::system::error_code& ec, std::size_t n) {
                            if (ec || stopped_) return;
                            handle(buf_.data(), n);
                            read_events();
                          });
}

void ConfigWatcher::handle(const char* data, std::size_t n) {
  bool relevant = false;
  std::size_t off = 0;
  while (off + sizeof(inotify_event) <= n) {
    inotify_event ev;
    std::memcpy(&ev, data + off, sizeof ev);
    std::string name(data + off + sizeof(inotify_event),
                     ::strnlen(data + off + sizeof(inotify_event), ev.len));
    off += sizeof(inotify_event) + ev.len;
    auto it = names_.find(ev.wd);
    if (it == names_.end()) continue;
    // A watched file, or Kubernetes' "..data" symlink swap in a ConfigMap volume.
    if (it->second.contains(name) || name.starts_with("..")) relevant = true;
  }
  if (!relevant) return;
  // Debounce: editors and config management write in several steps; reload once it is quiet.
  timer_.expires_after(debounce_);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec && !stopped_) on_change_();
  });
}

}  // namespace turnpike::core
