// Human-readable sizes for messages and the effective-config JSON.
#pragma once

#include <cstdint>
#include <string>

namespace turnpike::config {

/// The largest exact binary unit: 65536 -> "64KiB", 1000 -> "1000".
std::string format_size(std::uint64_t bytes);

}  // namespace turnpike::config
