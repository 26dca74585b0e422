#include "http2/header_block.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>

namespace turnpike::http2 {

namespace {

bool connection_specific(std::string_view lower_name) {
  return lower_name == "connection" || lower_name == "keep-alive" ||
         lower_name == "proxy-connection" || lower_name == "transfer-encoding" ||
         lower_name == "upgrade" || lower_name == "te" || lower_name == "content-length";
}

// Sent as "literal, never indexed" (RFC 7541 §6.2.3): a value unique to each message gains
// nothing from HPACK's dynamic table and evicts entries that would (X-Request-Id: 8% of the
// instructions of an h2c request went to indexing it), and credentials are kept out of the
// table so that a peer sharing the connection cannot guess them by compression (§7.1.3).
bool never_indexed(std::string_view lower_name) {
  return lower_name == "x-request-id" || lower_name == "authorization" ||
         lower_name == "proxy-authorization";
}

bool has_upper(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

}  // namespace

HeaderBlock::HeaderBlock() = default;
HeaderBlock::~HeaderBlock() = default;

void HeaderBlock::reserve(std::size_t n) {
  nva_.reserve(n);
}

void HeaderBlock::add(std::string_view name, std::string_view value) {
  const std::uint8_t flags = never_indexed(name) ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE;
  nva_.push_back(nghttp2_nv{reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
                            reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())),
                            name.size(), value.size(), flags});
}

std::size_t HeaderBlock::add_fields(const http::HeaderMap& fields,
                                    std::initializer_list<std::string_view> skip) {
  std::size_t bytes = 0;
  for (const auto& e : fields) {
    std::string_view name = e.name;
    if (has_upper(name)) {
      std::string& low = owned_.emplace_back(name);
      for (char& c : low)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      name = low;
    }
    if (connection_specific(name) || std::find(skip.begin(), skip.end(), name) != skip.end())
      continue;
    add(name, e.value);
    bytes += name.size() + e.value.size();
  }
  return bytes;
}

const nghttp2_nv* HeaderBlock::data() const noexcept {
  return nva_.data();
}

std::size_t HeaderBlock::size() const noexcept {
  return nva_.size();
}

int append_frames(nghttp2_session* session, std::string& out, std::size_t max) {
  while (out.size() < max) {
    const std::uint8_t* data = nullptr;
    const auto n = nghttp2_session_mem_send(session, &data);
    if (n < 0) return static_cast<int>(n);
    if (n == 0) break;
    out.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
  }
  return 0;
}

}  // namespace turnpike::http2
