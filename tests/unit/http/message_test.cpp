#include "turnpike/http/message.h"

#include <gtest/gtest.h>

namespace turnpike::http {
namespace {

std::vector<std::string> names(const HeaderMap& h) {
  std::vector<std::string> out;
  for (const auto& e : h)
    out.push_back(e.name);
  return out;
}

TEST(ReasonPhrase, KnownAndUnknown) {
  EXPECT_EQ(reason_phrase(200), "OK");
  EXPECT_EQ(reason_phrase(404), "Not Found");
  EXPECT_EQ(reason_phrase(408), "Request Timeout");
  EXPECT_EQ(reason_phrase(413), "Content Too Large");
  EXPECT_EQ(reason_phrase(414), "URI Too Long");
  EXPECT_EQ(reason_phrase(431), "Request Header Fields Too Large");
  EXPECT_EQ(reason_phrase(502), "Bad Gateway");
  EXPECT_EQ(reason_phrase(504), "Gateway Timeout");
  EXPECT_EQ(reason_phrase(299), "Unknown");
  EXPECT_EQ(reason_phrase(-1), "Unknown");
}

TEST(HopByHop, Names) {
  for (const char* n : {"Connection", "keep-alive", "Proxy-Connection", "TE", "Trailer",
                        "Transfer-Encoding", "UPGRADE"}) {
    EXPECT_TRUE(is_hop_by_hop(n)) << n;
  }
  for (const char* n : {"Content-Length", "Host", "Trailers", "te2", "Upgrade-Insecure-Requests",
                        "X-Connection", ""}) {
    EXPECT_FALSE(is_hop_by_hop(n)) << n;
  }
}

TEST(StripHopByHop, RemovesFixedSetAndConnectionNamed) {
  HeaderMap h;
  h.add("Host", "a");
  h.add("Connection", "keep-alive, X-Secret ,x-other");
  h.add("Keep-Alive", "timeout=5");
  h.add("X-Secret", "1");
  h.add("TE", "trailers");
  h.add("Accept", "*/*");
  h.add("Trailer", "Expires");
  h.add("Transfer-Encoding", "chunked");
  h.add("Upgrade", "websocket");
  h.add("Proxy-Connection", "keep-alive");
  h.add("X-OTHER", "2");
  h.add("connection", "X-Third");
  h.add("x-third", "3");
  h.add("X-Secret-Not", "kept");
  strip_hop_by_hop(h);
  EXPECT_EQ(names(h), (std::vector<std::string>{"Host", "Accept", "X-Secret-Not"}));
}

TEST(StripHopByHop, WithoutConnection) {
  HeaderMap h;
  h.add("Transfer-Encoding", "chunked");
  h.add("Content-Type", "text/plain");
  h.add("te", "trailers");
  strip_hop_by_hop(h);
  EXPECT_EQ(names(h), (std::vector<std::string>{"Content-Type"}));
}

TEST(StripHopByHop, ConnectionCannotRemoveEmptyOrPartialNames) {
  HeaderMap h;
  h.add("Connection", " , ,close,");
  h.add("X-Close", "kept");
  h.add("Close", "removed");
  strip_hop_by_hop(h);
  EXPECT_EQ(names(h), (std::vector<std::string>{"X-Close"}));
}

TEST(StripHopByHop, ManyHeadersBeyondInlineMarks) {
  HeaderMap h;
  h.add("Connection", "x-drop");
  for (int i = 0; i < 600; ++i)
    h.add(i % 3 == 0 ? "X-Drop" : "X-Keep", std::to_string(i));
  strip_hop_by_hop(h);
  EXPECT_EQ(h.count("x-drop"), 0u);
  EXPECT_EQ(h.count("x-keep"), 400u);
  EXPECT_EQ(h.size(), 400u);
  EXPECT_EQ(h.entries().front().value, "1");  // order preserved
}

}  // namespace
}  // namespace turnpike::http
