// The effective config as JSON (for GET /config on the admin listener).
#pragma once
#include <nlohmann/json.hpp>

#include "turnpike/config/config.h"

namespace turnpike::config {
nlohmann::json to_json(const Config& config);
}
