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

ConfigWatcher::ConfigWatcher(boost::asio::io_context& io, std::string path,
                             std::chrono::milliseconds debounce, std::function<void()> on_change)
    : path_(std::move(path)),
      debounce_(debounce),
      on_change_(std::move(on_change)),
      stream_(io),
      timer_(io) {}

ConfigWatcher::~ConfigWatcher() {
  stop();
}

std::string ConfigWatcher::start() {
  int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) return std::string("inotify_init1: ") + std::strerror(errno);
  std::vector<std::string> dirs{dir_of(path_)};
  names_.push_back(base_of(path_));
  char real[PATH_MAX];
  if (::realpath(path_.c_str(), real)) {
    std::string r(real);
    if (dir_of(r) != dirs.front()) dirs.push_back(dir_of(r));
    if (base_of(r) != names_.front()) names_.push_back(base_of(r));
  }
  for (const auto& d : dirs) {
    if (::inotify_add_watch(fd, d.c_str(), kMask) < 0) {
      std::string err = "inotify_add_watch " + d + ": " + std::strerror(errno);
      ::close(fd);
      return err;
    }
  }
  stream_.assign(fd);
  read_events();
  return {};
}

void ConfigWatcher::stop() {
  stopped_ = true;
  boost::system::error_code ignored;
  timer_.cancel();
  if (stream_.is_open()) stream_.close(ignored);
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
    std::string_view name(data + off + sizeof(inotify_event),
                          ::strnlen(data + off + sizeof(inotify_event), ev.len));
    // The file itself, or Kubernetes' "..data" symlink swap in a ConfigMap volume.
    for (const auto& want : names_)
      if (name == want) relevant = true;
    if (name.starts_with("..")) relevant = true;
    off += sizeof(inotify_event) + ev.len;
  }
  if (!relevant) return;
  // Debounce: editors and config management write in several steps; reload once it is quiet.
  timer_.expires_after(debounce_);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec && !stopped_) on_change_();
  });
}

}  // namespace turnpike::core
