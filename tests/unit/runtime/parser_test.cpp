#include <gtest/gtest.h>

#include <string>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>

#include "http1/parser.h"

namespace turnpike::http1 {
namespace {

namespace bhttp = boost::beast::http;

// Feeds `wire` the way ServerConnection does (head first, then body reads into a buffer of
// `out_size`), returning the body bytes; fails if the parser stalls with input left.
std::string parse_body(const std::string& wire, std::size_t out_size) {
  http::RequestHead head;
  RequestParser p(head, 100);
  p.eager(false);
  p.body_limit(1024 * 1024);
  p.header_limit(64 * 1024);
  std::string_view rest = wire;
  boost::system::error_code ec;
  std::size_t n = p.put(boost::asio::buffer(rest.data(), rest.size()), ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(p.is_header_done());
  rest.remove_prefix(n);
  std::string body;
  std::string out(out_size, '\0');
  for (int rounds = 0; !p.is_done(); ++rounds) {
    if (rounds > 100000 || rest.empty()) {
      ADD_FAILURE() << "stalled with " << rest.size() << " bytes left, body " << body.size();
      break;
    }
    p.set_output({out.data(), out.size()});
    ec = {};
    n = p.put(boost::asio::buffer(rest.data(), rest.size()), ec);
    rest.remove_prefix(n);
    if (ec && ec != bhttp::error::need_more && ec != bhttp::error::need_buffer) {
      ADD_FAILURE() << ec.message();
      break;
    }
    body.append(out.data(), p.produced());
  }
  EXPECT_TRUE(rest.empty());
  return body;
}

std::string chunked(const std::vector<std::size_t>& sizes) {
  std::string wire = "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
  char c = 'a';
  for (std::size_t s : sizes) {
    char hex[32];
    std::snprintf(hex, sizeof hex, "%zx\r\n", s);
    wire += hex;
    wire += std::string(s, c++);
    wire += "\r\n";
  }
  return wire + "0\r\n\r\n";
}

TEST(RequestParser, ChunkedBodyAlreadyBufferedIsReadToTheEnd) {
  for (const auto& sizes : std::vector<std::vector<std::size_t>>{
           {10}, {100}, {16000}, {16383}, {20000, 3}, {3, 20000}, {40000, 100}, {1, 1, 1}}) {
    std::size_t total = 0;
    for (auto s : sizes)
      total += s;
    for (std::size_t out : {std::size_t{7}, std::size_t{4096}, std::size_t{32768}})
      EXPECT_EQ(parse_body(chunked(sizes), out).size(), total)
          << "chunks " << sizes.size() << " first " << sizes[0] << " out " << out;
  }
}

}  // namespace
}  // namespace turnpike::http1
