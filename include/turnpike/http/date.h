// The IMF-fixdate for the Date header, cached per thread and refreshed once a second.
#pragma once
#include <string_view>

namespace turnpike::http {
/// e.g. "Sun, 06 Nov 1994 08:49:37 GMT". The view is valid until the next call on this thread.
std::string_view http_date_now() noexcept;
}  // namespace turnpike::http
