// Content digest of a config source, so reloads of an unchanged file can be recognized.
#pragma once

#include <string>
#include <string_view>

namespace turnpike::config {

/// Lower-case hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);

}  // namespace turnpike::config
