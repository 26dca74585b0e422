// The shared pieces filter types build on: ${variable} templates and CIDR ranges.
#include <gtest/gtest.h>

#include "turnpike/filters/cidr.h"
#include "turnpike/filters/credentials.h"
#include "turnpike/filters/template.h"

namespace turnpike::filters {
namespace {

Template make(std::string_view text) {
  auto t = Template::parse(text);
  EXPECT_TRUE(std::holds_alternative<Template>(t)) << std::get<std::string>(t);
  return std::get<Template>(std::move(t));
}

TEST(TemplateTest, RendersVariables) {
  RequestContext ctx;
  ctx.client_address = "10.0.0.1";
  ctx.client_ip = "198.51.100.7";
  ctx.request_id = "rid-1";
  ctx.consumer = "acme";
  ctx.route = "orders";
  ctx.claims = {{"sub", "user-42"}, {"tenant", "t1"}};
  http::RequestHead req;
  req.method = "GET";
  req.host = "api.example.com";
  req.path = "/orders/1";
  req.headers.add("X-Trace", "abc");
  EXPECT_EQ(make("${client_ip}|${request_id}|${consumer}|${route}").render(ctx, req),
            "198.51.100.7|rid-1|acme|orders");
  EXPECT_EQ(make("${jwt.sub}/${jwt.claim.tenant}/${jwt.missing}").render(ctx, req), "user-42/t1/");
  EXPECT_EQ(make("${method} ${host}${path} ${header.x-trace}").render(ctx, req),
            "GET api.example.com/orders/1 abc");
  EXPECT_EQ(make("cost: $$5, $x, $").render(ctx, req), "cost: $5, $x, $");
  EXPECT_TRUE(make("plain").literal());
  EXPECT_FALSE(make("a${route}").literal());
}

TEST(TemplateTest, NeverSplitsAHeader) {
  RequestContext ctx;
  http::RequestHead req;
  req.headers.add("x-evil", "a\r\nInjected: yes");
  EXPECT_EQ(make("${header.x-evil}").render(ctx, req), "aInjected: yes");
}

TEST(TemplateTest, Errors) {
  EXPECT_EQ(std::get<std::string>(Template::parse("${consumr}")),
            "unknown variable '${consumr}' (known: client_ip, request_id, consumer, route, "
            "listener, host, method, path, jwt.NAME, jwt.claim.NAME, header.NAME)");
  EXPECT_EQ(std::get<std::string>(Template::parse("x ${route")),
            "unterminated '${' (write '$$' for a literal '$')");
}

TEST(CredentialsTest, Sha256AndItsPartsForm) {
  // FIPS 180-2's "abc" test vector, through the hex form configs use.
  EXPECT_EQ(sha256("abc"),
            sha256_from_hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"));
  EXPECT_FALSE(sha256_from_hex("ba78"));
  EXPECT_FALSE(sha256_from_hex(std::string(64, 'g')));
  // Length-prefixed parts: moving a byte from one part to the next changes the digest.
  EXPECT_NE(sha256_of_parts({"ab", "c"}), sha256_of_parts({"a", "bc"}));
  EXPECT_EQ(sha256_of_parts({"ab", "c"}), sha256_of_parts({"ab", "c"}));
  EXPECT_NE(sha256_of_parts({"abc"}), sha256("abc"));
}

TEST(CidrTest, ParseAndContain) {
  const auto v4 = parse_cidr("10.0.0.0/8");
  ASSERT_TRUE(v4);
  EXPECT_TRUE(v4->contains(*parse_ip("10.255.1.2")));
  EXPECT_FALSE(v4->contains(*parse_ip("11.0.0.1")));
  EXPECT_TRUE(v4->contains(*parse_ip("::ffff:10.1.1.1")));  // IPv4-mapped
  EXPECT_FALSE(v4->contains(*parse_ip("::1")));
  const auto v6 = parse_cidr("2001:db8::/32");
  ASSERT_TRUE(v6);
  EXPECT_TRUE(v6->contains(*parse_ip("2001:db8:ffff::1")));
  EXPECT_TRUE(v6->contains(*parse_ip("[2001:db8::1]")));
  EXPECT_FALSE(v6->contains(*parse_ip("2001:db9::1")));
  const auto one = parse_cidr("192.0.2.1");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->prefix, 32u);
  EXPECT_TRUE(one->contains(*parse_ip("192.0.2.1")));
  EXPECT_FALSE(one->contains(*parse_ip("192.0.2.2")));
  const auto odd = parse_cidr("10.1.2.0/23");
  EXPECT_TRUE(odd->contains(*parse_ip("10.1.3.255")));
  EXPECT_FALSE(odd->contains(*parse_ip("10.1.4.0")));
  const auto all = parse_cidr("0.0.0.0/0");
  EXPECT_TRUE(all->contains(*parse_ip("8.8.8.8")));
}

TEST(CidrTest, Errors) {
  std::string err;
  EXPECT_FALSE(parse_cidr("10.0.0.1/8", &err));
  EXPECT_EQ(err, "'10.0.0.1/8' has bits set past the /8 prefix");
  EXPECT_FALSE(parse_cidr("10.0.0.0/33", &err));
  EXPECT_EQ(err, "'10.0.0.0/33': the prefix length is at most 32");
  EXPECT_FALSE(parse_cidr("example.com", &err));
  EXPECT_EQ(err, "'example.com' is not an IP address or CIDR range");
  EXPECT_FALSE(parse_cidr("10.0.0.0/", &err));
  EXPECT_FALSE(parse_cidr("10.0.0.0/-1", &err));
  EXPECT_FALSE(parse_ip(""));
  EXPECT_FALSE(parse_ip("1.2.3"));
}

}  // namespace
}  // namespace turnpike::filters
