#include "turnpike/http/date.h"

#include <ctime>

namespace turnpike::http {

std::string_view http_date_now() noexcept {
  thread_local std::time_t cached_second = 0;
  thread_local char buf[64];
  thread_local std::size_t len = 0;
  std::time_t now = std::time(nullptr);
  if (now != cached_second) {
    std::tm tm{};
    gmtime_r(&now, &tm);
    len = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    cached_second = now;
  }
  return {buf, len};
}

}  // namespace turnpike::http
