// AWS Signature Version 4 as Ember checks it, against AWS's own test vector and requests signed
// by the AWS CLI (botocore), with the clock set to the time they were signed.
#include "ember/gateway/sigv4.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace ember::gateway::sigv4 {
namespace {

constexpr std::string_view kCliSecret = "wJalrXUtnFEMI";
constexpr int64_t kSignedAt = 1796562635000;  // 2026-12-06T13:10:35Z

Request cli_request(std::string_view method, std::string_view target, std::string_view date,
                    std::vector<std::pair<std::string, std::string>> extra = {},
                    std::string_view body = {}) {
  Request r{method, target, {{"host", "127.0.0.1:18777"}, {"x-amz-date", std::string(date)}}, body};
  for (auto& h : extra) r.headers.push_back(std::move(h));
  return r;
}

Authorization cli_auth(std::string_view signed_headers, std::string_view signature,
                       std::string_view date = "20261206") {
  auto a = parse_authorization(
      fmt::format("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{}/us-east-1/lambda/aws4_request, "
                  "SignedHeaders={}, Signature={}",
                  date, signed_headers, signature));
  EXPECT_TRUE(a.ok()) << a.error().message;
  return a.ok() ? *a : Authorization{};
}

TEST(SigV4, AwsTestSuiteGetVanilla) {
  Request r{
      "GET", "/", {{"host", "example.amazonaws.com"}, {"x-amz-date", "20150830T123600Z"}}, ""};
  Authorization a{"AKIDEXAMPLE", "20150830", "us-east-1", "service", {"host", "x-amz-date"}, ""};
  EXPECT_EQ(signature(r, a, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

TEST(SigV4, RequestsSignedByTheAwsCliVerify) {
  auto get = cli_request("GET", "/2015-03-31/functions/fn1?Qualifier=2", "20261206T131035Z");
  auto get_auth = cli_auth("host;x-amz-date",
                           "ed26f98bc79037316637694ac67b05298cf3598e2fb170bb9bd676a35e03020a");
  EXPECT_EQ(canonical_request(get, get_auth,
                              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            "GET\n/2015-03-31/functions/fn1\nQualifier=2\nhost:127.0.0.1:18777\n"
            "x-amz-date:20261206T131035Z\n\nhost;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_TRUE(verify(get, get_auth, kCliSecret, kSignedAt).ok());

  // The path is signed encoded twice: ':' arrived as %3A and is signed as %253A.
  auto invoke = cli_request("POST", "/2015-03-31/functions/my-fn%3Aprod/invocations?Qualifier=1",
                            "20261206T130726Z", {{"x-amz-log-type", "Tail"}}, R"({"a": 1})");
  auto invoke_auth = cli_auth("host;x-amz-date;x-amz-log-type",
                              "9b0455ce641c2604b46d4253bd32772dfc306e6ebfd2e9916926e2bd9ad682ad");
  EXPECT_TRUE(verify(invoke, invoke_auth, kCliSecret, kSignedAt).ok());

  auto del = cli_request("DELETE", "/2015-03-31/functions/fn1", "20261206T131035Z");
  EXPECT_TRUE(verify(del,
                     cli_auth("host;x-amz-date",
                              "c776c75d7150b252b7b2fac809c0136685ab1c2c7d98e2d91da064658c28d3fe"),
                     kCliSecret, kSignedAt)
                  .ok());
}

TEST(SigV4, AnythingChangedAfterSigningIsRefused) {
  auto a = cli_auth("host;x-amz-date;x-amz-log-type",
                    "9b0455ce641c2604b46d4253bd32772dfc306e6ebfd2e9916926e2bd9ad682ad");
  auto refused = [&](Request r, std::string_view secret = kCliSecret, int64_t now = kSignedAt) {
    auto st = verify(r, a, secret, now);
    if (st.ok()) return std::string("accepted");
    return st.error().field;
  };
  const std::string target = "/2015-03-31/functions/my-fn%3Aprod/invocations?Qualifier=1";
  auto good = [&] {
    return cli_request("POST", target, "20261206T130726Z", {{"x-amz-log-type", "Tail"}},
                       R"({"a": 1})");
  };
  EXPECT_EQ(refused(good()), "accepted");
  EXPECT_EQ(refused(good(), "another secret"), "InvalidSignatureException");
  auto body = good();
  body.body = R"({"a": 2})";
  EXPECT_EQ(refused(body), "InvalidSignatureException");
  auto qualifier = good();
  qualifier.target = "/2015-03-31/functions/my-fn%3Aprod/invocations?Qualifier=2";
  EXPECT_EQ(refused(qualifier), "InvalidSignatureException");
  auto header = good();
  header.headers[2].second = "None";
  EXPECT_EQ(refused(header), "InvalidSignatureException");
  auto missing = good();
  missing.headers.pop_back();
  EXPECT_EQ(refused(missing), "InvalidSignatureException");
  auto host = good();
  host.headers[0].second = "127.0.0.1:9999";
  EXPECT_EQ(refused(host), "InvalidSignatureException");
  // Five minutes of skew either way, and no more.
  constexpr int64_t kDated = kSignedAt - 189'000;  // its X-Amz-Date, 20261206T130726Z
  EXPECT_EQ(refused(good(), kCliSecret, kDated + 299'000), "accepted");
  EXPECT_EQ(refused(good(), kCliSecret, kDated - 299'000), "accepted");
  EXPECT_EQ(refused(good(), kCliSecret, kDated + 301'000), "InvalidSignatureException");
  EXPECT_EQ(refused(good(), kCliSecret, kDated - 301'000), "InvalidSignatureException");
  // A signed body hash must be the body's.
  auto hashed = good();
  hashed.headers.emplace_back("x-amz-content-sha256", std::string(64, '0'));
  EXPECT_EQ(refused(hashed), "InvalidSignatureException");
}

TEST(SigV4, MalformedAuthorizationIsIncomplete) {
  for (const std::string& bad : std::vector<std::string>{
           "Bearer abc", "AWS4-HMAC-SHA256", "AWS4-HMAC-SHA256 Credential=AKID/20261206/us-east-1",
           "AWS4-HMAC-SHA256 Credential=AKID/20261206/us-east-1/lambda/aws4_request, "
           "SignedHeaders=host, Signature=short",
           "AWS4-HMAC-SHA256 Signature=" + std::string(64, 'a')}) {
    auto a = parse_authorization(bad);
    ASSERT_FALSE(a.ok()) << bad;
    EXPECT_EQ(a.error().field, "IncompleteSignatureException");
  }
  auto a = cli_auth("host;x-amz-date", std::string(64, 'a'));
  auto r = cli_request("GET", "/", "20261206T131035Z");
  a.signed_headers = {"host"};
  EXPECT_EQ(verify(r, a, kCliSecret, kSignedAt).error().field, "IncompleteSignatureException")
      << "x-amz-date must be signed";
  a = cli_auth("host;x-amz-date", std::string(64, 'a'));
  a.service = "s3";
  EXPECT_EQ(verify(r, a, kCliSecret, kSignedAt).error().field, "InvalidSignatureException");
}

}  // namespace
}  // namespace ember::gateway::sigv4
