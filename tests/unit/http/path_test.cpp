#include "turnpike/http/path.h"

#include <gtest/gtest.h>

#include <string>

namespace turnpike::http {
namespace {

struct NormCase {
  std::string target;
  std::string path;
  std::string query;
};

class NormalizeOk : public ::testing::TestWithParam<NormCase> {};

TEST_P(NormalizeOk, Normalizes) {
  const auto& c = GetParam();
  const auto r = normalize_target(c.target);
  ASSERT_TRUE(r.has_value()) << c.target;
  EXPECT_EQ(r->path, c.path) << c.target;
  EXPECT_EQ(r->query, c.query) << c.target;
}

INSTANTIATE_TEST_SUITE_P(
    Paths, NormalizeOk,
    ::testing::Values(
        NormCase{"/", "/", ""}, NormCase{"/a/b", "/a/b", ""}, NormCase{"/a/", "/a/", ""},
        NormCase{"/a/b?x=1&y=%2f", "/a/b", "x=1&y=%2f"}, NormCase{"/?", "/", ""},
        NormCase{"/a?b?c", "/a", "b?c"},
        // Dot segments, raw and encoded: routing must not be bypassable.
        NormCase{"/api/../admin", "/admin", ""}, NormCase{"/api/%2e%2e/admin", "/admin", ""},
        NormCase{"/api/%2E%2E/admin", "/admin", ""}, NormCase{"/api/.%2E/admin", "/admin", ""},
        NormCase{"/api/%2e./admin", "/admin", ""}, NormCase{"//admin", "/admin", ""},
        NormCase{"/./admin", "/admin", ""}, NormCase{"/admin/.", "/admin/", ""},
        NormCase{"/admin/%2e", "/admin/", ""}, NormCase{"/admin/..", "/", ""},
        NormCase{"/api/./users", "/api/users", ""}, NormCase{"/a//b", "/a/b", ""},
        NormCase{"/a///b//", "/a/b/", ""}, NormCase{"/..", "/", ""}, NormCase{"/../..", "/", ""},
        NormCase{"/../../etc/passwd", "/etc/passwd", ""}, NormCase{"/a/b/../../..", "/", ""},
        NormCase{"/a/b/c/../../d", "/a/d", ""}, NormCase{"/a/./b/./", "/a/b/", ""},
        NormCase{"/a/..//b", "/b", ""}, NormCase{"/a/%2e%2e%2fadmin", "/a/..%2Fadmin", ""},
        NormCase{"/api/..?q=/..", "/", "q=/.."},
        // Not dot segments: names that merely contain dots.
        NormCase{"/a/.../b", "/a/.../b", ""}, NormCase{"/a/..b/c", "/a/..b/c", ""},
        NormCase{"/a/.b", "/a/.b", ""}, NormCase{"/file.txt", "/file.txt", ""},
        // Encoded slash stays encoded (reserved), and never splits a segment.
        NormCase{"/a%2Fb", "/a%2Fb", ""}, NormCase{"/a%2fb", "/a%2Fb", ""},
        NormCase{"/a/..%2F..%2Fadmin", "/a/..%2F..%2Fadmin", ""},
        // Unreserved decoded; other escapes upper-cased.
        NormCase{"/%41%62c%2D%5f%7E%30", "/Abc-_~0", ""}, NormCase{"/a%3fb", "/a%3Fb", ""},
        NormCase{"/a%20b", "/a%20b", ""}, NormCase{"/%c3%a9", "/%C3%A9", ""},
        NormCase{"/%25", "/%25", ""}, NormCase{"/%252e%252e/", "/%252e%252e/", ""},
        // Overlong UTF-8 for '.' is not '.', and stays encoded.
        NormCase{"/a/%c0%ae%c0%ae/admin", "/a/%C0%AE%C0%AE/admin", ""},
        // Raw non-ASCII is encoded so both spellings route alike.
        NormCase{"/caf\xC3\xA9", "/caf%C3%A9", ""},
        // Absolute form reduced to path and query.
        NormCase{"http://example.com/a/../b?x", "/b", "x"},
        NormCase{"HTTPS://example.com:8443", "/", ""}, NormCase{"http://h?x=1", "/", "x=1"},
        NormCase{"http://user@h//x", "/x", ""}));

class NormalizeRejects : public ::testing::TestWithParam<std::string> {};

TEST_P(NormalizeRejects, Rejects) {
  EXPECT_FALSE(normalize_target(GetParam()).has_value()) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Targets, NormalizeRejects,
                         ::testing::Values("", "*", "a/b", "../a", "ftp://h/x", "http:/x",
                                           "http://", "http:///a", "/a%", "/a%2", "/a%zz", "/a%2g",
                                           "/%%30", "/a%00b", "/a%00", "/a b", "/a\tb",
                                           std::string("/a\0b", 4), "/a\x7f", "/a\r\nX: y",
                                           "/a#frag", "/a?x#f", "/a?x y", "/a?\x01",
                                           "http://h\x01/a"));

TEST(Normalize, LongPathsStayLinearAndBounded) {
  std::string target;
  for (int i = 0; i < 2000; ++i)
    target += "/a/..";
  target += "/end";
  auto r = normalize_target(target);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->path, "/end");

  std::string deep(8192, '/');
  r = normalize_target(deep);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->path, "/");

  std::string climb;
  for (int i = 0; i < 1000; ++i)
    climb += "/%2e%2E";
  climb += "/admin";
  r = normalize_target(climb);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->path, "/admin");
}

TEST(QueryParam, FindsFirstAndDecodes) {
  EXPECT_EQ(query_param("v=2", "v"), "2");
  EXPECT_EQ(query_param("a=1&v=2&v=3", "v"), "2");
  EXPECT_EQ(query_param("a=1&vv=2", "v"), std::nullopt);
  EXPECT_EQ(query_param("flag&x=1", "flag"), "");
  EXPECT_EQ(query_param("flag=&x=1", "flag"), "");
  EXPECT_EQ(query_param("q=a%20b+c%2B", "q"), "a b c+");
  EXPECT_EQ(query_param("na%6De=x", "name"), "x");
  EXPECT_EQ(query_param("q=100%", "q"), "100%");  // invalid escape kept literally
  EXPECT_EQ(query_param("q=%zz", "q"), "%zz");
  EXPECT_EQ(query_param("", "q"), std::nullopt);
  EXPECT_EQ(query_param("&&q=1&", "q"), "1");
  EXPECT_EQ(query_param("q=a=b", "q"), "a=b");
}

TEST(QueryParam, NonAllocatingHelpers) {
  EXPECT_EQ(find_query_param("x=1&v=a%20b", "v"), std::optional<std::string_view>("a%20b"));
  EXPECT_TRUE(query_component_equals("a%20b", "a b"));
  EXPECT_TRUE(query_component_equals("a+b", "a b"));
  EXPECT_FALSE(query_component_equals("a%20b", "a b "));
  EXPECT_FALSE(query_component_equals("a%20", "a"));
  EXPECT_TRUE(query_component_equals("", ""));
  char buf[16];
  const std::string_view raw = "%41+%4";
  EXPECT_EQ(std::string_view(buf, decode_query_component(raw, buf)), "A %4");
}

TEST(NormalizeHost, LowerCasesAndStripsPort) {
  EXPECT_EQ(normalize_host("API.Example.com:8080"), "api.example.com");
  EXPECT_EQ(normalize_host("api.example.com"), "api.example.com");
  EXPECT_EQ(normalize_host("[::1]:80"), "[::1]");
  EXPECT_EQ(normalize_host("[::1]"), "[::1]");
  EXPECT_EQ(normalize_host("[FE80::1]"), "[fe80::1]");
  EXPECT_EQ(normalize_host("127.0.0.1:9000"), "127.0.0.1");
  EXPECT_EQ(normalize_host("Example.COM.:443"), "example.com");
  EXPECT_EQ(normalize_host(""), "");
}

}  // namespace
}  // namespace turnpike::http
