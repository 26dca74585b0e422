// The snapshot core/ builds, publishes to the workers and keeps per generation: the proxy's
// proxy::Snapshot (defined there, since requests run against it and proxy/ is below core/).
#pragma once

#include "proxy/snapshot.h"

namespace turnpike::core {

using proxy::Snapshot;
using proxy::SnapshotPtr;

}  // namespace turnpike::core
