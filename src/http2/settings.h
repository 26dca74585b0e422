// HTTP/2 settings and abuse limits, the codec's own types: core/ and upstream/ fill them from
// the config (listeners[].http2, clusters[].http2).
#pragma once

#include <cstdint>

namespace turnpike::http2 {

/// A downstream (server) connection's settings and abuse limits.
struct ServerSettings {
  std::uint32_t max_concurrent_streams = 100;
  std::uint32_t initial_window_size = 65'535;
  std::uint32_t connection_window_size = 1 << 20;
  std::uint32_t max_frame_size = 16'384;
  std::uint32_t header_table_size = 4'096;
  std::uint32_t max_resets_burst = 1'000;
  std::uint32_t max_resets_per_second = 33;
  std::uint32_t max_continuations = 8;
  std::uint32_t max_control_frames_burst = 1'000;
  std::uint32_t max_control_frames_per_second = 100;
  std::uint32_t max_empty_frames = 8;
};

/// An upstream (client) connection's settings.
struct ClientSettings {
  std::uint32_t max_concurrent_streams = 100;
  std::uint32_t initial_window_size = 256 * 1024;
  std::uint32_t connection_window_size = 16 * 1024 * 1024;
};

}  // namespace turnpike::http2
