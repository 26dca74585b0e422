// The files a config names (certificates, keys, CA bundles): resolved against the config file's
// directory, read and checked when the config loads, so a bad certificate is a config error
// with file:line:column like any other, and their content becomes part of the config's digest.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "config/diagnostics.h"

namespace turnpike::config {

/// Resolves relative paths in `config` (in place), reads and checks every referenced file, and
/// reports problems to `diag`. Returns (path, SHA-256 of its content) for each file read.
std::vector<std::pair<std::string, std::string>> check_referenced_files(Config& config,
                                                                        Diagnostics& diag);

}  // namespace turnpike::config
