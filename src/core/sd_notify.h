// systemd's notification protocol (sd_notify), spoken directly over the datagram socket named
// by $NOTIFY_SOCKET, so Type=notify / Type=notify-reload units know when Turnpike is ready,
// reloading or stopping. A no-op when the variable is unset. Control thread only.
#pragma once

#include <string_view>

namespace turnpike::core {

class SdNotifier {
 public:
  SdNotifier();
  bool enabled() const noexcept { return fd_ >= 0; }
  /// Sends one message ("READY=1\nSTATUS=..."); never blocks, errors are ignored.
  void send(std::string_view message) noexcept;
  /// "RELOADING=1\nMONOTONIC_USEC=<now>", as Type=notify-reload requires.
  void reloading() noexcept;
  ~SdNotifier();
  SdNotifier(const SdNotifier&) = delete;
  SdNotifier& operator=(const SdNotifier&) = delete;

 private:
  int fd_ = -1;
  char addr_[112] = {};  // sockaddr_un storage
  unsigned addr_len_ = 0;
};

}  // namespace turnpike::core
