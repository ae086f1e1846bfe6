#include <gtest/gtest.h>

#include "ember/common/crypto.h"
#include "ember/common/json_fields.h"
#include "ember/common/log.h"

namespace ember {
namespace {

using nlohmann::json;

TEST(JsonFields, ReadsKnownFieldsAndKeepsDefaults) {
  json doc = json::parse(R"({"a": 5, "s": "x", "b": true})");
  JsonFields f(doc, "");
  int a = 1, missing = 7;
  std::string s;
  bool b = false;
  f.integer("a", a, 0, 10);
  f.integer("missing", missing, 0, 10);
  f.string("s", s);
  f.boolean("b", b);
  ASSERT_TRUE(f.finish().ok());
  EXPECT_EQ(a, 5);
  EXPECT_EQ(missing, 7);
  EXPECT_EQ(s, "x");
  EXPECT_TRUE(b);
}

TEST(JsonFields, UnknownKeyIsAnErrorWithItsPath) {
  json doc = json::parse(R"({"limits": {"max": 3, "typo": 1}})");
  JsonFields f(doc, "");
  const json* limits = f.object("limits");
  ASSERT_NE(limits, nullptr);
  JsonFields g(*limits, "limits");
  int max = 0;
  g.integer("max", max, 0, 10);
  auto st = g.finish();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().field, "limits.typo");
  EXPECT_NE(st.error().message.find("limits.typo: unknown field"), std::string::npos);
}

TEST(JsonFields, RangeAndTypeErrorsNameTheField) {
  json doc = json::parse(R"({"n": 11, "f": 1.5, "s": 3})");
  {
    JsonFields f(doc, "x");
    int n = 0;
    f.integer("n", n, 0, 10);
    auto st = f.finish();
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().field, "x.n");
    EXPECT_NE(st.error().message.find("from 0 to 10"), std::string::npos);
  }
  {
    JsonFields f(doc, "");
    int v = 0;
    f.integer("f", v, 0, 10);
    EXPECT_EQ(f.finish().error().field, "f");
  }
  {
    JsonFields f(doc, "");
    std::string s;
    f.string("s", s);
    EXPECT_EQ(f.finish().error().field, "s");
  }
}

TEST(JsonFields, OneOfRejectsOtherValues) {
  json doc = json::parse(R"({"mode": "fast"})");
  JsonFields f(doc, "");
  std::string mode = "none";
  f.one_of("mode", mode, {"none", "host"});
  auto st = f.finish();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("\"none\", \"host\""), std::string::npos);
  EXPECT_EQ(mode, "none");
}

TEST(JsonDepth, CountsArraysAndObjectsButNotBracketsInStrings) {
  EXPECT_EQ(json_depth("1"), 0u);
  EXPECT_EQ(json_depth(R"({"a": [1, {"b": []}]})"), 4u);
  EXPECT_EQ(json_depth(R"(["[[[[", "\"[[", {"k]": "}}}"}])"), 2u);
  EXPECT_EQ(json_depth(std::string(5000, '[') + std::string(5000, ']'), 10), 11u)
      << "counting stops just past the limit";
}

TEST(JsonDepth, UntrustedTextDeeperThanTheLimitIsRefusedUnparsed) {
  const std::string ok = std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']');
  const std::string deep = "[" + ok + "]";
  EXPECT_FALSE(parse_untrusted(ok).is_discarded());
  EXPECT_TRUE(accept_untrusted(ok));
  EXPECT_TRUE(parse_untrusted(deep).is_discarded());
  EXPECT_FALSE(accept_untrusted(deep));
  auto parsed = parse_json(deep, "request body");
  ASSERT_FALSE(parsed);
  EXPECT_EQ(parsed.error().message,
            "request body nests deeper than 1000 levels of arrays and objects");
  // Two million levels: refused without recursion (this would overflow the stack when built).
  EXPECT_TRUE(parse_untrusted(std::string(2'000'000, '[')).is_discarded());
}

TEST(JsonFields, NonObjectDocumentIsAnError) {
  JsonFields f(json::array(), "");
  EXPECT_FALSE(f.finish().ok());
}

TEST(ParseJson, SyntaxErrorIsInvalid) {
  auto r = parse_json("{\"a\": ", "body");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::kInvalid);
  EXPECT_NE(r.error().message.find("body is not valid JSON"), std::string::npos);
}

TEST(ParseJson, SyntaxErrorNamesThePlaceNotTheParser) {
  auto r = parse_json("{\"a\": 1,\n  \"b\": x}", "body");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "body is not valid JSON: unexpected input at line 2, column 8");
  EXPECT_EQ(r.error().message.find("json.exception"), std::string::npos);
  auto cut = parse_json("[1, 2", "body");
  ASSERT_FALSE(cut.ok());
  EXPECT_EQ(cut.error().message, "body is not valid JSON: it ends before the value does");
  auto wide = parse_json("{\"é\": x}", "body");
  EXPECT_EQ(wide.error().message, "body is not valid JSON: unexpected input at line 1, column 7");
  // A number no double holds is refused, not thrown.
  auto huge = parse_json("{\"timeout_ms\": 1e400}", "function.json");
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.error().message, "function.json has a number out of range");
}

TEST(Crypto, Sha256OfKnownInput) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Crypto, ConstantTimeEqual) {
  EXPECT_TRUE(constant_time_equal("secret", "secret"));
  EXPECT_FALSE(constant_time_equal("secret", "secreT"));
  EXPECT_FALSE(constant_time_equal("secret", "secret1"));
}

TEST(Crypto, RandomHexHasRequestedLengthAndVaries) {
  auto a = random_hex(16), b = random_hex(16);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 32u);
  EXPECT_NE(*a, *b);
}

TEST(LogRateLimiter, AllowsBurstThenRefillsWithTime) {
  FakeClock clock;
  LogRateLimiter limiter(/*per_second=*/2, /*burst=*/3, clock);
  uint64_t suppressed = 0;
  EXPECT_TRUE(limiter.allow(suppressed));
  EXPECT_TRUE(limiter.allow(suppressed));
  EXPECT_TRUE(limiter.allow(suppressed));
  EXPECT_FALSE(limiter.allow(suppressed));
  EXPECT_FALSE(limiter.allow(suppressed));
  clock.advance(std::chrono::milliseconds(500));
  ASSERT_TRUE(limiter.allow(suppressed));
  EXPECT_EQ(suppressed, 2u);
  EXPECT_FALSE(limiter.allow(suppressed));
}

TEST(LogLevel, Parses) {
  EXPECT_EQ(parse_log_level("debug"), spdlog::level::debug);
  EXPECT_EQ(parse_log_level("error"), spdlog::level::err);
  EXPECT_FALSE(parse_log_level("loud").has_value());
}

}  // namespace
}  // namespace ember

#include "ember/common/text.h"

namespace ember {
namespace {

TEST(Utf8, AcceptsValidAndRejectsMalformed) {
  EXPECT_TRUE(is_valid_utf8("plain ascii"));
  EXPECT_TRUE(is_valid_utf8("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x94\xA5"));
  EXPECT_FALSE(is_valid_utf8("\xFF"));
  EXPECT_FALSE(is_valid_utf8("\xC3"));              // truncated
  EXPECT_FALSE(is_valid_utf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));  // past U+10FFFF
}

TEST(Base64, RoundTripsBinary) {
  std::string binary;
  for (int i = 0; i < 256; ++i) binary.push_back(static_cast<char>(i));
  for (size_t len : {0u, 1u, 2u, 3u, 4u, 255u, 256u}) {
    auto s = binary.substr(0, len);
    auto decoded = base64_decode(base64_encode(s));
    ASSERT_TRUE(decoded.has_value()) << len;
    EXPECT_EQ(*decoded, s) << len;
  }
  EXPECT_EQ(base64_encode("hi"), "aGk=");
  EXPECT_FALSE(base64_decode("abc").has_value());
  EXPECT_FALSE(base64_decode("a*c=").has_value());
}

}  // namespace
}  // namespace ember
