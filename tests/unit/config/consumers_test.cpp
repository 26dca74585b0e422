// consumers:, redis: and the filter references of listeners and routes.
#include <gtest/gtest.h>

#include "turnpike/config/config.h"
#include "unit/config/load_helpers.h"

namespace turnpike::config {
namespace {

using testing::error_lines;
using testing::kPreamble;

constexpr const char* kTestKeySha =
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

TEST(Consumers, KeysAreKeptAsSha256Digests) {
  const auto r = load_string(std::string(kPreamble) + R"(consumers:
  - name: acme
    groups: [gold, beta]
    api_keys: ["sha256:9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08", "plain-key-123"]
    basic_auth: {password_hash: "$2y$10$abcdefghijklmnopqrstuu5Yl2RlJd1uv4T1oE5Ub8q7W3nOQ2BkC"}
  - name: globex
)",
                             "t.yaml");
  ASSERT_TRUE(r.config) << testing::joined(error_lines(r));
  const auto& c = r.config->consumers;
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].name, "acme");
  EXPECT_EQ(c[0].groups, (std::vector<std::string>{"gold", "beta"}));
  ASSERT_EQ(c[0].api_key_sha256.size(), 2u);
  EXPECT_EQ(c[0].api_key_sha256[0], kTestKeySha);  // lower-cased
  EXPECT_EQ(
      c[0].api_key_sha256[1],
      "17848d3fbfc96b4d182ede3c9614be04218360648ab2fc39caa54269945af25b");  // sha256("plain-key-123")
  EXPECT_TRUE(c[0].password_hash.starts_with("$2y$10$"));
  EXPECT_TRUE(c[1].api_key_sha256.empty());
}

TEST(Consumers, Errors) {
  testing::expect_errors(std::string(kPreamble) + R"(consumers:
  - name: acme
    api_keys: ["sha256:abc", "short"]
    basic_auth: {password_hash: "md5-is-not-ok"}
  - name: acme
    api_keys: ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
  - groups: [x]
    api_keys: ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
    nmae: x
)",
                         {
                             "t.yaml:11:16: consumers[0].api_keys[0]: a 'sha256:' key needs 64 "
                             "hex digits (the SHA-256 of the key)",
                             "t.yaml:11:30: consumers[0].api_keys[1]: an API key needs at least "
                             "8 characters",
                             "t.yaml:12:33: consumers[0].basic_auth.password_hash: expected a "
                             "bcrypt ($2y$...) or SHA-512-crypt ($6$...) hash, e.g. from "
                             "'htpasswd -nbB user password' or 'mkpasswd -m sha-512'",
                             "t.yaml:13:11: consumers[1].name: duplicate consumer name 'acme' "
                             "(also consumers[0])",
                             "t.yaml:15:5: consumers[2]: missing required key 'name'",
                             "t.yaml:16:16: consumers[2].api_keys[0]: this API key is also a key "
                             "of consumers[1] ('acme')",
                             "t.yaml:17:5: consumers[2]: unknown key 'nmae' (did you mean "
                             "'name'?)",
                         });
}

TEST(Redis, AddressAndDefaults) {
  const auto r = load_string(
      std::string(kPreamble) + R"(redis: {address: "127.0.0.1:6380", database: 2, timeout: 50ms}
)",
      "t.yaml");
  ASSERT_TRUE(r.config) << testing::joined(error_lines(r));
  ASSERT_TRUE(r.config->redis);
  EXPECT_EQ(r.config->redis->host, "127.0.0.1");
  EXPECT_EQ(r.config->redis->port, 6380);
  EXPECT_EQ(r.config->redis->database, 2u);
  EXPECT_EQ(r.config->redis->timeout, Duration{50});
  EXPECT_EQ(r.config->redis->connect_timeout, Duration{1000});
  testing::expect_errors(std::string(kPreamble) + "redis: {address: \"127.0.0.1\", db: 1}\n",
                         {"t.yaml:9:18: redis.address: '127.0.0.1' needs a port: 'HOST:PORT'",
                          "t.yaml:9:31: redis: unknown key 'db'"});
}

TEST(FilterReferences, UnknownNames) {
  testing::expect_errors(std::string(kPreamble) + R"(routes:
  - match: {path_prefix: /}
    filters: [auth, auth]
    backend: users
)",
                         {"t.yaml:11:15: routes[0].filters[0]: unknown filter 'auth' (there is "
                          "no filters: section)",
                          "t.yaml:11:21: routes[0].filters[1]: filter 'auth' is listed twice"});
}

}  // namespace
}  // namespace turnpike::config
