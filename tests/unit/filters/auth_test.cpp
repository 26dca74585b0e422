// api_key, basic_auth and authz, built from inline YAML the way the daemon builds them, run
// against a recording StreamCallbacks: status, local reply, headers and query the upstream
// would get, and the request context later filters see.
#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <crypt.h>

#include <chrono>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "turnpike/config/config.h"
#include "turnpike/filters/registry.h"
#include "unit/filters/recording_callbacks.h"

namespace turnpike::filters {
namespace {

using TestCallbacks = test_support::RecordingCallbacks;

std::string sha512_crypt(const char* pw) {
  crypt_data data{};
  const char* out = crypt_r(pw, "$6$saltsaltsalt$", &data);
  return out;
}

std::string bcrypt(const char* pw, const char* prefix = "$2b$") {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  crypt_data data{};
  if (crypt_gensalt_rn(prefix, 4, nullptr, 0, setting, sizeof setting) == nullptr) return "";
  return crypt_r(pw, setting, &data);
}

class AuthFilters : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { register_builtin_filter_types(); }

  void load(const std::string& filters_yaml) {
    const std::string yaml = std::string(R"(listeners:
  - name: l
    listen: 127.0.0.1:8080
clusters:
  - name: up
    endpoints: ["127.0.0.1:9001"]
consumers:
  - name: acme
    groups: [gold]
    api_keys: ["acme-key-0001"]
    basic_auth: {password_hash: ")") +
                             bcrypt("acme-pw") + R"("}
  - name: beta
    groups: [silver]
    api_keys: ["sha256:)" + sha256_hex("beta-key-0002") +
                             R"("]
    basic_auth: {password_hash: ")" +
                             sha512_crypt("beta-pw") + R"("}
filters:
)" + filters_yaml;
    auto r = config::load_string(yaml, "t.yaml");
    for (const auto& e : r.errors)
      ADD_FAILURE() << e.to_string();
    ASSERT_TRUE(r.config);
    config_ = std::make_unique<config::Config>(std::move(*r.config));
  }

  static std::string sha256_hex(const std::string& s) {
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), d);
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : d) {
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
    return out;
  }

  std::shared_ptr<const FilterConfig> build(const std::string& name) {
    const auto* f = config_->find_filter(name);
    EXPECT_NE(f, nullptr) << name;
    return build_filter(*config_, *f);
  }

  // Runs one filter's request phase on `req`.
  Status run(const std::string& name, http::RequestHead& req, TestCallbacks& cb) {
    auto cfg = build(name);
    return cb.settle(*cfg->create(), req);
  }

  static http::RequestHead request(std::string target) {
    http::RequestHead req;
    req.method = "GET";
    req.target = target;
    const auto q = target.find('?');
    req.path = target.substr(0, q);
    if (q != std::string::npos) req.query = target.substr(q + 1);
    return req;
  }

  std::unique_ptr<config::Config> config_;
};

TEST_F(AuthFilters, ApiKeyFromHeaderSetsConsumerAndRemovesTheKey) {
  load("  k: {type: api_key}\n");
  auto req = request("/a?x=1");
  req.headers.add("X-Api-Key", "acme-key-0001");
  req.headers.add("x-other", "1");
  TestCallbacks cb;
  EXPECT_EQ(run("k", req, cb), Status::Continue);
  EXPECT_FALSE(cb.replied);
  EXPECT_EQ(cb.ctx.consumer, "acme");
  EXPECT_EQ(cb.ctx.groups, std::vector<std::string>{"gold"});
  EXPECT_FALSE(req.headers.has("x-api-key"));
  EXPECT_TRUE(req.headers.has("x-other"));
  EXPECT_EQ(req.query, "x=1");
}

TEST_F(AuthFilters, ApiKeyRefusals) {
  load("  k: {type: api_key, realm: api}\n");
  const auto check = [&](std::vector<std::string> keys, const char* error) {
    auto req = request("/");
    for (const auto& k : keys)
      req.headers.add("x-api-key", k);
    TestCallbacks cb;
    EXPECT_EQ(run("k", req, cb), Status::Stop);
    ASSERT_TRUE(cb.replied);
    EXPECT_EQ(cb.reply.status, 401);
    EXPECT_EQ(cb.reply.error, error);
    EXPECT_EQ(cb.reply.headers, (HeaderList{{"WWW-Authenticate", "ApiKey realm=\"api\""}}));
    EXPECT_TRUE(cb.ctx.consumer.empty());
  };
  check({}, "missing API key");
  check({""}, "missing API key");
  check({"acme-key-0002"}, "invalid API key");
  check({"beta-key-0002", "acme-key-0001"}, "several API keys");
  check({sha256_hex("beta-key-0002")}, "invalid API key");  // the digest is not the key
}

TEST_F(AuthFilters, ApiKeyFromQueryKeepsOtherParametersAndFixesTheTarget) {
  load("  k: {type: api_key, query: api_key}\n");
  auto req = request("/p/a%20b?z=9&api_key=beta-key-0002&&a=&api_key_x=1");
  TestCallbacks cb;
  EXPECT_EQ(run("k", req, cb), Status::Continue);
  EXPECT_EQ(cb.ctx.consumer, "beta");
  EXPECT_EQ(req.query, "z=9&&a=&api_key_x=1");
  EXPECT_EQ(req.target, "/p/a%20b?z=9&&a=&api_key_x=1");

  auto only = request("/p?api%5Fkey=acme%2Dkey-0001");  // encoded name and value
  TestCallbacks cb2;
  EXPECT_EQ(run("k", only, cb2), Status::Continue);
  EXPECT_EQ(cb2.ctx.consumer, "acme");
  EXPECT_EQ(only.query, "");
  EXPECT_EQ(only.target, "/p");
}

TEST_F(AuthFilters, ApiKeyConsumersRestrictTheInstance) {
  load("  k: {type: api_key, consumers: [beta]}\n");
  auto req = request("/");
  req.headers.add("x-api-key", "acme-key-0001");
  TestCallbacks cb;
  EXPECT_EQ(run("k", req, cb), Status::Stop);
  EXPECT_EQ(cb.reply.error, "invalid API key");
}

std::string basic(const std::string& userpass) {
  static constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out = "Basic ";
  std::size_t i = 0;
  for (; i + 2 < userpass.size(); i += 3) {
    const unsigned n = static_cast<unsigned char>(userpass[i]) << 16 |
                       static_cast<unsigned char>(userpass[i + 1]) << 8 |
                       static_cast<unsigned char>(userpass[i + 2]);
    out += {kB64[n >> 18], kB64[(n >> 12) & 63], kB64[(n >> 6) & 63], kB64[n & 63]};
  }
  if (i + 1 == userpass.size()) {
    const unsigned n = static_cast<unsigned char>(userpass[i]) << 16;
    out += {kB64[n >> 18], kB64[(n >> 12) & 63], '=', '='};
  } else if (i + 2 == userpass.size()) {
    const unsigned n = static_cast<unsigned char>(userpass[i]) << 16 |
                       static_cast<unsigned char>(userpass[i + 1]) << 8;
    out += {kB64[n >> 18], kB64[(n >> 12) & 63], kB64[(n >> 6) & 63], '='};
  }
  return out;
}

TEST_F(AuthFilters, BasicAuthBothHashKinds) {
  load("  b: {type: basic_auth, realm: staff}\n");
  auto cfg = build("b");
  for (const auto& [cred, who] : {std::pair{"acme:acme-pw", "acme"}, {"beta:beta-pw", "beta"}}) {
    auto req = request("/");
    req.headers.add("Authorization", basic(cred));
    TestCallbacks cb;
    EXPECT_EQ(cb.settle(*cfg->create(), req), Status::Continue) << cred;
    EXPECT_EQ(cb.ctx.consumer, who);
    EXPECT_FALSE(req.headers.has("authorization"));
  }
  for (const auto& [value, error] :
       {std::pair{std::string(), "missing credentials"},
        {basic("acme:wrong"), "invalid credentials"},
        {basic("nobody:acme-pw"), "invalid credentials"},
        {basic("acme"), "malformed credentials"},
        {std::string("Basic a*b="), "malformed credentials"},
        {basic(std::string("acme:acme-pw\0x", 14)), "invalid credentials"},
        {std::string("Digest x"), "missing credentials"}}) {
    auto req = request("/");
    if (!value.empty()) req.headers.add("Authorization", value);
    TestCallbacks cb;
    EXPECT_EQ(cb.settle(*cfg->create(), req), Status::Stop) << value;
    EXPECT_EQ(cb.reply.status, 401);
    EXPECT_EQ(cb.reply.error, error) << value;
    EXPECT_EQ(cb.reply.headers,
              (HeaderList{{"WWW-Authenticate", "Basic realm=\"staff\", charset=\"UTF-8\""}}));
  }
}

TEST_F(AuthFilters, BasicAuthCacheIsPerWorkerAndKeyedByPassword) {
  load("  b: {type: basic_auth, cache: {max_entries: 2, ttl: 1s}}\n");
  auto cfg = build("b");
  const auto go = [&](const std::string& cred, unsigned worker) {
    auto req = request("/");
    req.headers.add("Authorization", basic(cred));
    TestCallbacks cb;
    cb.worker = worker;
    return cb.settle(*cfg->create(), req);
  };
  // Warm both workers, then check that a wrong password is never answered from the cache.
  EXPECT_EQ(go("acme:acme-pw", 0), Status::Continue);
  {
    // Verified on this worker: answered on the spot, no suspension, no bcrypt.
    auto req = request("/");
    req.headers.add("Authorization", basic("acme:acme-pw"));
    TestCallbacks cb;
    EXPECT_EQ(cfg->create()->on_request_headers(req, cb), Status::Continue);
    EXPECT_EQ(cb.ctx.consumer, "acme");
  }
  EXPECT_EQ(go("acme:acme-pw", 3), Status::Continue);
  EXPECT_EQ(go("acme:acme-pwx", 0), Status::Stop);
  EXPECT_EQ(go("beta:beta-pw", 0), Status::Continue);
  EXPECT_EQ(go("acme:acme-pw", 1023), Status::Continue);
  EXPECT_EQ(go("acme:acme-pw", 5000), Status::Continue);  // beyond the slots: uncached
}

TEST_F(AuthFilters, AuthzConditions) {
  load(R"(  g: {type: authz, groups: [gold, ops]}
  c: {type: authz, consumers: [beta]}
  s: {type: authz, scopes: [read, write]}
  cl: {type: authz, claims: {role: [admin, ops], level: ["3"]}}
  ip: {type: authz, cidrs: [10.0.0.0/8, "2001:db8::/32"], deny_cidrs: [10.9.0.0/16]}
)");
  const auto decide = [&](const char* name, const RequestContext& ctx) -> std::string {
    auto req = request("/");
    TestCallbacks cb;
    cb.ctx = ctx;
    if (run(name, req, cb) == Status::Continue) return "ok";
    EXPECT_EQ(cb.reply.status, 403);
    EXPECT_TRUE(cb.reply.headers.empty());
    return cb.reply.error;
  };
  RequestContext anon;
  anon.client_ip = "10.1.2.3";
  EXPECT_EQ(decide("g", anon), "not authenticated");
  EXPECT_EQ(decide("ip", anon), "ok");
  RequestContext acme = anon;
  acme.consumer = "acme";
  acme.groups = {"gold"};
  EXPECT_EQ(decide("g", acme), "ok");
  EXPECT_EQ(decide("c", acme), "consumer not allowed");
  acme.groups = {"silver"};
  EXPECT_EQ(decide("g", acme), "consumer not in an allowed group");

  RequestContext jwt;
  jwt.claims = {{"sub", "u1"}, {"role", R"(["viewer","ops"])"}, {"level", "3"}};
  jwt.scopes = {"read"};
  EXPECT_EQ(decide("s", jwt), "missing scope 'write'");
  jwt.scopes = {"write", "read", "admin"};
  EXPECT_EQ(decide("s", jwt), "ok");
  EXPECT_EQ(decide("cl", jwt), "ok");
  jwt.claims[1].second = "viewer";
  EXPECT_EQ(decide("cl", jwt), "claim 'role' not allowed");
  jwt.claims[1].second = "admin";
  jwt.claims.pop_back();
  EXPECT_EQ(decide("cl", jwt), "missing claim 'level'");

  RequestContext ip;
  ip.client_address = "10.9.1.1";
  EXPECT_EQ(decide("ip", ip), "address denied");
  ip.client_ip = "2001:db8::5";  // client_ip (from ip_filter) wins over the peer
  EXPECT_EQ(decide("ip", ip), "ok");
  ip.client_ip = "192.0.2.1";
  EXPECT_EQ(decide("ip", ip), "address not allowed");
}

}  // namespace
}  // namespace turnpike::filters
