// Precompiled header for translation units that use Asio and Beast.
#pragma once
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>
