#include <gtest/gtest.h>

#include "turnpike/config/config.h"

namespace turnpike::config {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

TEST(ParseDuration, AcceptsUnits) {
  EXPECT_EQ(parse_duration("250ms"), milliseconds(250));
  EXPECT_EQ(parse_duration("5s"), seconds(5));
  EXPECT_EQ(parse_duration("1m"), minutes(1));
  EXPECT_EQ(parse_duration("2h"), hours(2));
  EXPECT_EQ(parse_duration("1.5s"), milliseconds(1500));
  EXPECT_EQ(parse_duration("0.25s"), milliseconds(250));
  EXPECT_EQ(parse_duration("1.5m"), seconds(90));
  EXPECT_EQ(parse_duration("0"), milliseconds(0));
  EXPECT_EQ(parse_duration("0s"), milliseconds(0));
  EXPECT_EQ(parse_duration("24h"), hours(24));
}

TEST(ParseDuration, RejectsMalformed) {
  for (const char* bad : {"", "5", "100", "s", "5x", "5 s", " 5s", "5S", "-1s", "1.s", ".5s",
                          "0.5ms", "1.0001s", "5sec", "1h30m", "1e3ms", "9999999999999h"}) {
    EXPECT_FALSE(parse_duration(bad).has_value()) << bad;
  }
}

TEST(FormatDuration, ShortestExactSpelling) {
  EXPECT_EQ(format_duration(milliseconds(0)), "0s");
  EXPECT_EQ(format_duration(milliseconds(250)), "250ms");
  EXPECT_EQ(format_duration(milliseconds(1500)), "1500ms");
  EXPECT_EQ(format_duration(seconds(15)), "15s");
  EXPECT_EQ(format_duration(seconds(90)), "90s");
  EXPECT_EQ(format_duration(minutes(5)), "5m");
  EXPECT_EQ(format_duration(hours(24)), "24h");
  for (const auto ms : {1, 999, 1000, 1500, 60'000, 61'000, 3'600'000, 86'400'000}) {
    EXPECT_EQ(parse_duration(format_duration(milliseconds(ms))), milliseconds(ms)) << ms;
  }
}

TEST(ParseSize, AcceptsUnits) {
  EXPECT_EQ(parse_size("0"), 0U);
  EXPECT_EQ(parse_size("512"), 512U);
  EXPECT_EQ(parse_size("512B"), 512U);
  EXPECT_EQ(parse_size("64KiB"), 64U * 1024);
  EXPECT_EQ(parse_size("10MiB"), 10U * 1024 * 1024);
  EXPECT_EQ(parse_size("1GiB"), 1024ULL * 1024 * 1024);
  EXPECT_EQ(parse_size("2TiB"), 2ULL << 40);
  EXPECT_EQ(parse_size("10KB"), 10'000U);
  EXPECT_EQ(parse_size("10kB"), 10'000U);
  EXPECT_EQ(parse_size("10MB"), 10'000'000U);
  EXPECT_EQ(parse_size("1GB"), 1'000'000'000U);
  EXPECT_EQ(parse_size("1.5KiB"), 1536U);
  EXPECT_EQ(parse_size("0.5MiB"), 512U * 1024);
}

TEST(ParseSize, RejectsMalformed) {
  for (const char* bad : {"", "KiB", "64kib", "64 KiB", "-1", "64K", "64Ki", "1.5", "0.3KiB", "1e6",
                          "64KiBs", "99999999999999GiB"}) {
    EXPECT_FALSE(parse_size(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace turnpike::config
