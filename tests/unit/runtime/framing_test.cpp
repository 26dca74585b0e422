#include <gtest/gtest.h>

#include <string>

#include "http1/framing.h"

namespace turnpike::http1 {
namespace {

std::string flatten(const FrameBuffers& bufs, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i)
    out.append(static_cast<const char*>(bufs[i].data()), bufs[i].size());
  return out;
}

TEST(Framing, IdentityBodyFollowsTheHead) {
  std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
  FrameBuffers bufs;
  std::string body = "hello";
  std::size_t n = frame_body(head, body, /*chunked=*/false, /*end=*/true, bufs);
  EXPECT_EQ(flatten(bufs, n), "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
}

TEST(Framing, ChunkedPieceAndLastChunk) {
  std::string prefix;
  FrameBuffers bufs;
  std::string body(26, 'x');
  EXPECT_EQ(flatten(bufs, frame_body(prefix, body, true, false, bufs)), "1a\r\n" + body + "\r\n");
  prefix.clear();
  EXPECT_EQ(flatten(bufs, frame_body(prefix, body, true, true, bufs)),
            "1a\r\n" + body + "\r\n0\r\n\r\n");
  prefix.clear();
  EXPECT_EQ(flatten(bufs, frame_body(prefix, {}, true, true, bufs)), "0\r\n\r\n");
}

TEST(Framing, NothingToWriteForAnEmptyIdentityPiece) {
  std::string prefix;
  FrameBuffers bufs;
  EXPECT_EQ(frame_body(prefix, {}, false, true, bufs), 0u);
}

TEST(Framing, Numbers) {
  std::string s;
  append_decimal(s, 18446744073709551615ull);
  s += ' ';
  append_hex(s, 255);
  EXPECT_EQ(s, "18446744073709551615 ff");
}

}  // namespace
}  // namespace turnpike::http1
