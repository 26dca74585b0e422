// The filter types the config loader knows (registered through register_filter_parser).
#pragma once

#include <string_view>
#include <vector>

#include "turnpike/config/reader.h"

namespace turnpike::config {

/// Null when no such type is registered.
FilterParser find_filter_parser(std::string_view type);
std::vector<std::string_view> filter_type_names();

}  // namespace turnpike::config
