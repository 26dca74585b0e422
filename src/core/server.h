// The daemon: the control thread owns the config snapshot, the listening sockets, the workers,
// the admin listener and signal handling (SIGTERM/SIGINT: graceful drain).
#pragma once

#include "turnpike/config/config.h"

namespace turnpike::core {

/// Runs Turnpike on `cfg` until a stop signal; returns the process exit status.
int run_server(config::Config cfg);

}  // namespace turnpike::core
