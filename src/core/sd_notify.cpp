#include "core/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

namespace turnpike::core {

SdNotifier::SdNotifier() {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (!path || !*path) return;
  std::size_t len = std::strlen(path);
  sockaddr_un un{};
  if (len >= sizeof un.sun_path || (path[0] != '/' && path[0] != '@')) return;
  un.sun_family = AF_UNIX;
  std::memcpy(un.sun_path, path, len);
  if (path[0] == '@') un.sun_path[0] = '\0';  // abstract namespace
  static_assert(sizeof un <= sizeof addr_);
  std::memcpy(addr_, &un, sizeof un);
  addr_len_ = static_cast<unsigned>(offsetof(sockaddr_un, sun_path) + len);
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
}

SdNotifier::~SdNotifier() {
  if (fd_ >= 0) ::close(fd_);
}

void SdNotifier::send(std::string_view message) noexcept {
  if (fd_ < 0) return;
  (void)::sendto(fd_, message.data(), message.size(), MSG_NOSIGNAL,
                 reinterpret_cast<const sockaddr*>(addr_), addr_len_);
}

void SdNotifier::reloading() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  std::uint64_t usec = static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000u +
                       static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
}

}  // namespace turnpike::core
