// Checks that need the whole config at once: names that must be unique, routes naming
// clusters, and routes that an earlier route shadows. Works on the typed structs only; the
// locations come from what the YAML loader recorded in Diagnostics.
#pragma once

#include "config/diagnostics.h"
#include "turnpike/config/config.h"

namespace turnpike::config {

/// Duplicate names and listen addresses, unknown clusters. Adds errors.
void validate_references(const Config& config, Diagnostics& diag);

/// A route that can never match because an earlier one matches every request it would.
/// Adds warnings; conservative (warns only when certain).
void warn_shadowed_routes(const Config& config, Diagnostics& diag);

}  // namespace turnpike::config
