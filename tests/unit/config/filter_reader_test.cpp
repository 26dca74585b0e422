// A filter type's view of the config: its parser, registered by type name, reads its block
// through config::Reader, and every problem it reports carries file:line:column and key path.
#include <gtest/gtest.h>

#include "turnpike/config/config.h"
#include "turnpike/config/reader.h"
#include "unit/config/load_helpers.h"

namespace turnpike::config {
namespace {

using testing::error_lines;
using testing::kPreamble;

struct ProbeSettings final : FilterSettings {
  std::optional<Rate> rate;
  std::vector<std::string> names;
  std::string file;
  std::vector<std::string> files() const override {
    return file.empty() ? std::vector<std::string>{} : std::vector<std::string>{file};
  }
  void validate(const Config& c,
                const std::function<void(std::string_view, std::string)>& error) const override {
    if (!c.redis) error("rate", "needs a top-level redis: section");
  }
};

std::shared_ptr<const FilterSettings> parse_probe(Reader& r, const Node& block) {
  const auto m = r.map(block, {"type", "rate", "monthly", "names", "header", "file"});
  if (!m) return nullptr;
  auto s = std::make_shared<ProbeSettings>();
  if (const auto* n = m->get("rate")) s->rate = r.rate(*n, false);
  if (const auto* n = m->get("monthly")) (void)r.rate(*n, true);
  if (const auto* n = m->get("names")) {
    if (auto v = r.strings(*n)) s->names = std::move(*v);
  }
  if (const auto* n = m->get("header")) (void)r.header_name(*n);
  if (const auto* n = m->get("file")) {
    if (auto f = r.string(*n)) s->file = r.resolve_path(*f);
  }
  return s;
}

class FilterReader : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { register_filter_parser("probe", parse_probe); }
};

TEST_F(FilterReader, ParsesThroughTheRegisteredParser) {
  const auto r = load_string(std::string(kPreamble) + R"(redis: {address: "127.0.0.1:6379"}
filters:
  p: {type: probe, rate: 100/min, names: one}
  q: {type: probe, rate: 5/s, names: [a, b], monthly: 10/month}
)",
                             "/etc/tp/t.yaml");
  ASSERT_TRUE(r.config) << testing::joined(error_lines(r));
  ASSERT_EQ(r.config->filters.size(), 2u);
  const auto& p = static_cast<const ProbeSettings&>(*r.config->filters[0].settings);
  EXPECT_EQ(r.config->filters[0].type, "probe");
  ASSERT_TRUE(p.rate);
  EXPECT_EQ(p.rate->count, 100u);
  EXPECT_EQ(p.rate->period, Rate::Period::Minute);
  EXPECT_EQ(p.rate->length(), Duration{60'000});
  EXPECT_EQ(p.rate->to_string(), "100/min");
  EXPECT_EQ(p.names, std::vector<std::string>{"one"});
  const auto& q = static_cast<const ProbeSettings&>(*r.config->filters[1].settings);
  EXPECT_EQ(q.names, (std::vector<std::string>{"a", "b"}));
}

TEST_F(FilterReader, ErrorsCarryFileLineColumnAndKeyPath) {
  const auto r = load_string(std::string(kPreamble) + R"(redis: {address: "127.0.0.1:6379"}
filters:
  p: {type: probe, rate: 100/fortnight, header: "bad header", monthly: 5/month}
  q: {type: probe, rate: "0/s", names: [], mystery: 1}
  r: {type: prob}
  s: [not, a, map]
  t: {rate: 1/s}
  u: {type: probe, rate: 1/month}
)",
                             "t.yaml");
  EXPECT_EQ(error_lines(r),
            (std::vector<std::string>{
                "t.yaml:11:26: filters.p.rate: invalid rate unit in '100/fortnight' (units: s, "
                "min, hour or day)",
                "t.yaml:11:49: filters.p.header: 'bad header' is not a valid header name",
                "t.yaml:12:26: filters.q.rate: must be at least 1 per unit, got '0/s'",
                "t.yaml:12:44: filters.q: unknown key 'mystery'",
                "t.yaml:13:13: filters.r.type: unknown filter type 'prob' (did you mean "
                "'probe'?)",
                "t.yaml:14:6: filters.s: expected a map with a 'type' (one of: probe), got a "
                "list",
                "t.yaml:15:6: filters.t: missing required key 'type'",
                "t.yaml:16:26: filters.u.rate: invalid rate unit in '1/month' (units: s, min, "
                "hour or day)",
            }));
}

TEST_F(FilterReader, ValidateSeesTheWholeConfig) {
  const auto r = load_string(std::string(kPreamble) + R"(filters:
  p:
    type: probe
    rate: 1/s
)",
                             "t.yaml");
  EXPECT_EQ(
      error_lines(r),
      (std::vector<std::string>{"t.yaml:12:11: filters.p.rate: needs a top-level redis: section"}));
}

}  // namespace
}  // namespace turnpike::config
