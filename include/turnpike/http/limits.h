// What a server-side codec enforces on each request of a connection: sizes (431, 414, 413)
// and deadlines (408, idle close). The codecs' own settings type: core/ fills it from the
// listener's config, so the codecs never see config:: structs.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

namespace turnpike::http {

struct ServerLimits {
  std::uint64_t max_header_bytes = 64 * 1024;  // request line + headers
  std::uint32_t max_headers = 100;
  std::uint64_t max_uri_bytes = 8 * 1024;
  std::optional<std::uint64_t> max_body_bytes;  // unlimited when unset
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds body_timeout{60'000};
};

}  // namespace turnpike::http
