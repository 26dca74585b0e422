#include "turnpike/http/header_map.h"

#include <gtest/gtest.h>

namespace turnpike::http {
namespace {

std::vector<std::string> names(const HeaderMap& h) {
  std::vector<std::string> out;
  for (const auto& e : h)
    out.push_back(e.name + "=" + e.value);
  return out;
}

TEST(IEquals, FoldsAsciiOnly) {
  EXPECT_TRUE(iequals("Content-Type", "content-type"));
  EXPECT_TRUE(iequals("", ""));
  EXPECT_FALSE(iequals("content-type", "content-typ"));
  EXPECT_FALSE(iequals("a-b", "a_b"));
  // '@' (0x40) and '`' (0x60) differ only by the 0x20 bit but are not letters.
  EXPECT_FALSE(iequals("@", "`"));
  EXPECT_FALSE(iequals("[", "{"));
  EXPECT_FALSE(iequals("\xC3\x89", "\xC3\xA9"));  // no Unicode folding
}

TEST(HeaderMap, GetIsCaseInsensitiveAndReturnsFirst) {
  HeaderMap h;
  h.add("X-Trace", "1");
  h.add("x-trace", "2");
  h.add("Host", "example.com");
  ASSERT_NE(h.get("X-TRACE"), nullptr);
  EXPECT_EQ(*h.get("X-TRACE"), "1");
  EXPECT_EQ(h.count("x-trace"), 2u);
  EXPECT_TRUE(h.has("host"));
  EXPECT_FALSE(h.has("hos"));
  EXPECT_EQ(h.get("missing"), nullptr);
  EXPECT_EQ(h.count("missing"), 0u);
}

TEST(HeaderMap, AddKeepsOrderAndCase) {
  HeaderMap h;
  h.add("B", "1");
  h.add("a", "2");
  h.add("B", "3");
  EXPECT_EQ(names(h), (std::vector<std::string>{"B=1", "a=2", "B=3"}));
  EXPECT_EQ(h.size(), 3u);
}

TEST(HeaderMap, SetReplacesAllKeepingFirstPosition) {
  HeaderMap h;
  h.add("A", "1");
  h.add("X-Id", "old1");
  h.add("B", "2");
  h.add("x-id", "old2");
  h.set("X-ID", "new");
  EXPECT_EQ(names(h), (std::vector<std::string>{"A=1", "X-Id=new", "B=2"}));
  h.set("C", "3");
  EXPECT_EQ(names(h), (std::vector<std::string>{"A=1", "X-Id=new", "B=2", "C=3"}));
}

TEST(HeaderMap, RemoveReturnsCount) {
  HeaderMap h;
  h.add("Cookie", "a");
  h.add("Accept", "*/*");
  h.add("cookie", "b");
  EXPECT_EQ(h.remove("COOKIE"), 2u);
  EXPECT_EQ(names(h), (std::vector<std::string>{"Accept=*/*"}));
  EXPECT_EQ(h.remove("cookie"), 0u);
  h.clear();
  EXPECT_TRUE(h.empty());
}

}  // namespace
}  // namespace turnpike::http
