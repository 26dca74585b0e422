#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "core/reload.h"

namespace turnpike::core {
namespace {

const char* kBase = R"(admin: {listen: 127.0.0.1:19999}
listeners:
  - {name: public, listen: 127.0.0.1:18888}
clusters:
  - {name: a, endpoints: ["127.0.0.1:9001"]}
  - {name: b, endpoints: ["127.0.0.1:9002"]}
routes:
  - {name: svc, match: {path_prefix: /svc}, backend: TARGET}
)";

class ReloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = ::testing::TempDir() + "reload_test_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".yaml";
  }
  void TearDown() override { std::remove(path_.c_str()); }

  void write(const std::string& target, const std::string& extra = "") {
    std::string text = kBase;
    text.replace(text.find("TARGET"), 6, target);
    std::ofstream(path_) << text << extra;
  }
  SnapshotPtr load() {
    auto r = config::load_file(path_);
    EXPECT_TRUE(r.errors.empty());
    return std::make_shared<const Snapshot>(std::move(*r.config), 1);
  }

  std::string path_;
};

TEST_F(ReloadTest, ChangedContentBuildsTheNextGeneration) {
  write("a");
  auto current = load();
  write("b");
  ReloadOutcome out = prepare_reload(path_, *current);
  EXPECT_EQ(out.result, "applied");
  ASSERT_TRUE(out.snapshot);
  EXPECT_EQ(out.snapshot->generation, 2u);
  EXPECT_EQ(out.snapshot->config.routes[0].backends[0].cluster, "b");
  EXPECT_NE(out.snapshot->config.digest, current->config.digest);
}

TEST_F(ReloadTest, IdenticalContentIsUnchanged) {
  write("a");
  auto current = load();
  ReloadOutcome out = prepare_reload(path_, *current);
  EXPECT_EQ(out.result, "unchanged");
  EXPECT_FALSE(out.snapshot);
}

TEST_F(ReloadTest, InvalidConfigIsRejectedWithPositions) {
  write("a");
  auto current = load();
  write("nosuch");
  ReloadOutcome out = prepare_reload(path_, *current);
  EXPECT_EQ(out.result, "rejected");
  EXPECT_FALSE(out.snapshot);
  ASSERT_EQ(out.errors.size(), 1u);
  EXPECT_EQ(out.errors[0], path_ + ":8:54: routes[0].backend: unknown cluster 'nosuch'");
}

TEST_F(ReloadTest, ListenerChangesApplyButWorkerCountNeedsARestart) {
  write("a");
  auto current = load();
  std::string text = kBase;
  text.replace(text.find("TARGET"), 6, "a");
  text.replace(text.find("18888"), 5, "18889");
  std::ofstream(path_) << text;
  ReloadOutcome out = prepare_reload(path_, *current);
  EXPECT_EQ(out.result, "applied");
  EXPECT_TRUE(out.errors.empty());

  std::ofstream(path_) << "workers: 3\n" << text;
  out = prepare_reload(path_, *current);
  EXPECT_EQ(out.result, "rejected");
  ASSERT_EQ(out.errors.size(), 1u);
  EXPECT_NE(out.errors[0].find("workers:"), std::string::npos) << out.errors[0];
  EXPECT_NE(out.errors[0].find("restart"), std::string::npos) << out.errors[0];
}

TEST_F(ReloadTest, DryRunDiffsListenersClustersAndRoutes) {
  write("a");
  auto current = load();
  std::string text = kBase;
  text.replace(text.find("TARGET"), 6, "b");
  text.replace(text.find("  - {name: a, endpoints"), 0,
               "  - {name: c, endpoints: [\"127.0.0.1:9003\"]}\n");
  text.replace(text.find("  - {name: public"), 0, "  - {name: extra, listen: 127.0.0.1:18890}\n");
  const auto d = dry_run(path_, text, *current);
  EXPECT_TRUE(d["valid"]);
  EXPECT_FALSE(d["unchanged"]);
  EXPECT_EQ(d["changes"]["listeners"]["added"], nlohmann::json::array({"extra"}));
  EXPECT_EQ(d["changes"]["listeners"]["removed"], nlohmann::json::array());
  EXPECT_EQ(d["changes"]["clusters"]["added"], nlohmann::json::array({"c"}));
  EXPECT_EQ(d["changes"]["routes"]["changed"], nlohmann::json::array({"svc"}));
  EXPECT_EQ(d["restart_required"], nlohmann::json::array());
  // Nothing was applied: the file on disk is still the current config.
  EXPECT_TRUE(dry_run(path_, "", *current)["unchanged"]);

  const auto bad = dry_run(path_, "listeners: 3\n", *current);
  EXPECT_FALSE(bad["valid"]);
  EXPECT_FALSE(bad["errors"].empty());
  EXPECT_FALSE(bad.contains("changes"));
}

TEST_F(ReloadTest, StatusReportsGenerationAndLastResult) {
  write("a");
  auto current = load();
  ReloadStatus status(*current);
  auto j = status.to_json();
  EXPECT_EQ(j["generation"], 1);
  EXPECT_TRUE(j["last_reload"].is_null());

  write("nosuch");
  status.record(prepare_reload(path_, *current), "SIGHUP", *current);
  j = status.to_json();
  EXPECT_EQ(j["generation"], 1);
  EXPECT_EQ(j["last_reload"]["result"], "rejected");
  EXPECT_EQ(j["last_reload"]["trigger"], "SIGHUP");
  EXPECT_EQ(j["last_reload"]["errors"].size(), 1u);
  EXPECT_EQ(j["reloads"]["rejected"], 1);

  write("b");
  ReloadOutcome ok = prepare_reload(path_, *current);
  status.record(ok, "admin", *ok.snapshot);
  j = status.to_json();
  EXPECT_EQ(j["generation"], 2);
  EXPECT_EQ(j["last_reload"]["result"], "applied");
  EXPECT_TRUE(j["last_reload"]["errors"].empty());
  EXPECT_EQ(j["reloads"]["applied"], 1);
}

}  // namespace
}  // namespace turnpike::core
