#include "ember/registry/manifest.h"

#include <gtest/gtest.h>

#include "temp_dir.h"

namespace ember::registry {
namespace {

using nlohmann::json;

TEST(Name, AcceptsValidNames) {
  for (const char* n : {"a", "hello", "hello-world", "0day", "a1-b2-c3"}) {
    EXPECT_TRUE(validate_name(n).ok()) << n;
  }
  EXPECT_TRUE(validate_name(std::string(63, 'a')).ok());
}

TEST(Name, RejectsEverythingElse) {
  for (std::string n : std::vector<std::string>{"", "-a", "A", "hello_world", "a.b", "..", ".",
                                                "a/b", "%2e%2e", "a b", std::string("a\0b", 3),
                                                std::string(64, 'a'), "héllo", "a%00"}) {
    auto st = validate_name(n);
    ASSERT_FALSE(st.ok()) << n;
    EXPECT_EQ(st.error().code, Errc::kInvalid);
  }
}

TEST(Manifest, DefaultsAreFilledIn) {
  auto c = parse_config(json::parse(R"({"runtime":"node","handler":"index.handler"})"));
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->runtime, Runtime::kNode);
  EXPECT_EQ(c->memory_mb, 128);
  EXPECT_EQ(c->timeout_ms, 3000);
  EXPECT_EQ(c->max_instances, 10);
  EXPECT_EQ(c->min_instances, 0);
  EXPECT_EQ(c->idle_timeout_s, 60);
  EXPECT_EQ(c->concurrency, 1);
  EXPECT_EQ(c->network, "none");
  EXPECT_EQ(c->auth, "none");
}

TEST(Manifest, FullExampleFromTheDesign) {
  auto c = parse_config(json::parse(R"({ "runtime": "node", "handler": "index.handler",
    "memory_mb": 128, "timeout_ms": 3000, "max_instances": 10, "min_instances": 0,
    "idle_timeout_s": 60, "concurrency": 1, "env": {"GREETING": "hi"}, "network": "none",
    "auth": "none" })"));
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->env.at("GREETING"), "hi");
}

struct BadCase {
  const char* manifest;
  const char* field;
};

TEST(Manifest, BadFieldsAreNamed) {
  const BadCase cases[] = {
      {R"({"handler":"index.handler"})", "runtime"},
      {R"({"runtime":"ruby","handler":"x.y"})", "runtime"},
      {R"({"runtime":"node"})", "handler"},
      {R"({"runtime":"node","handler":"index"})", "handler"},
      {R"({"runtime":"node","handler":"../x.handler"})", "handler"},
      {R"({"runtime":"node","handler":"/etc/passwd.x"})", "handler"},
      {R"({"runtime":"python","handler":"main.1bad"})", "handler"},
      {R"({"runtime":"node","handler":"i.h","memory_mb":1})", "memory_mb"},
      {R"({"runtime":"node","handler":"i.h","memory_mb":"128"})", "memory_mb"},
      {R"({"runtime":"node","handler":"i.h","memory_mb":128.5})", "memory_mb"},
      {R"({"runtime":"node","handler":"i.h","timeout_ms":0})", "timeout_ms"},
      {R"({"runtime":"node","handler":"i.h","max_instances":0})", "max_instances"},
      {R"({"runtime":"node","handler":"i.h","max_instances":2,"min_instances":3})",
       "min_instances"},
      {R"({"runtime":"python","handler":"m.h","concurrency":4})", "concurrency"},
      {R"({"runtime":"node","handler":"i.h","network":"bridge"})", "network"},
      {R"({"runtime":"node","handler":"i.h","auth":"basic"})", "auth"},
      {R"({"runtime":"node","handler":"i.h","env":{"A":1}})", "env.A"},
      {R"({"runtime":"node","handler":"i.h","env":{"EMBER_X":"1"}})", "env.EMBER_X"},
      {R"({"runtime":"node","handler":"i.h","env":{"1A":"1"}})", "env"},
      {R"({"runtime":"node","handler":"i.h","env":[]})", "env"},
      {R"({"runtime":"node","handler":"i.h","colour":"red"})", "colour"},
  };
  for (const auto& c : cases) {
    auto r = parse_config(json::parse(c.manifest));
    ASSERT_FALSE(r.ok()) << c.manifest;
    EXPECT_EQ(r.error().code, Errc::kInvalid) << c.manifest;
    EXPECT_EQ(r.error().field, c.field) << c.manifest << ": " << r.error().message;
    EXPECT_NE(r.error().message.find(c.field), std::string::npos) << r.error().message;
  }
}

TEST(Manifest, EnvHasASizeBudget) {
  json m = json::parse(R"({"runtime":"node","handler":"i.h"})");
  m["env"]["BIG"] = std::string(5000, 'x');
  auto r = parse_config(m);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().field, "env");
}

TEST(Manifest, OverridesWinOverTheManifest) {
  auto overrides = overrides_from_query({{"memory_mb", "256"}, {"handler", "main.run"}});
  ASSERT_TRUE(overrides.ok());
  auto c = parse_config(json::parse(R"({"runtime":"node","handler":"index.handler"})"), *overrides);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->memory_mb, 256);
  EXPECT_EQ(c->handler, "main.run");
}

TEST(Manifest, QueryOverridesAreTypedAndStrict) {
  EXPECT_FALSE(overrides_from_query({{"memory_mb", "lots"}}).ok());
  EXPECT_FALSE(overrides_from_query({{"memory_mb", "12x"}}).ok());
  EXPECT_FALSE(overrides_from_query({{"colour", "red"}}).ok());
  EXPECT_FALSE(overrides_from_query({{"runtime", "node"}, {"runtime", "python"}}).ok());
  auto only_query = overrides_from_query({{"runtime", "python"}, {"handler", "main.handler"}});
  ASSERT_TRUE(only_query.ok());
  EXPECT_TRUE(parse_config(json::object(), *only_query).ok()) << "manifest is optional";
}

TEST(Manifest, ProvidedDefaultsItsHandler) {
  auto c = parse_config(json::parse(R"({"runtime":"provided"})"));
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->handler, "bootstrap");
}

TEST(Manifest, PatchChangesOnlyGivenFields) {
  auto base = parse_config(json::parse(R"({"runtime":"node","handler":"i.h","memory_mb":256})"));
  ASSERT_TRUE(base.ok());
  auto patched = patch_config(*base, json::parse(R"({"timeout_ms": 9000})"));
  ASSERT_TRUE(patched.ok());
  EXPECT_EQ(patched->timeout_ms, 9000);
  EXPECT_EQ(patched->memory_mb, 256);
  EXPECT_FALSE(patch_config(*base, json::parse(R"({"timeout_ms": -1})")).ok());
  EXPECT_FALSE(patch_config(*base, json::parse(R"({"nope": 1})")).ok());
}

TEST(Manifest, RoundTripsThroughJson) {
  auto c = parse_config(
      json::parse(R"({"runtime":"python","handler":"app.main","env":{"K":"v"},"memory_mb":512})"));
  ASSERT_TRUE(c.ok());
  auto again = parse_config(c->to_json());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*c, *again);
}

TEST(CheckHandler, FindsTheFileInTheBundle) {
  testing::TempDir t;
  testing::write_text(t / "src" / "app.mjs", "");
  testing::write_text(t / "pkg" / "mod.py", "");
  testing::write_text(t / "bootstrap", "");
  auto node = parse_config(json::parse(R"({"runtime":"node","handler":"src/app.handler"})"));
  EXPECT_TRUE(check_handler(*node, t.path()).ok());
  auto missing = parse_config(json::parse(R"({"runtime":"node","handler":"index.handler"})"));
  auto st = check_handler(*missing, t.path());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("index.js"), std::string::npos);
  auto py = parse_config(json::parse(R"({"runtime":"python","handler":"pkg.mod.handler"})"));
  EXPECT_TRUE(check_handler(*py, t.path()).ok());
  auto provided = parse_config(json::parse(R"({"runtime":"provided"})"));
  EXPECT_FALSE(check_handler(*provided, t.path()).ok()) << "bootstrap is not executable";
  std::filesystem::permissions(t / "bootstrap", std::filesystem::perms::owner_all);
  EXPECT_TRUE(check_handler(*provided, t.path()).ok());
}

TEST(Manifest, AsyncAndScheduleAreReadAndChecked) {
  auto c = parse_config(json::parse(R"json({"runtime":"node","handler":"index.handler",
      "async": {"retries": 0, "max_age_s": 60, "on_failure": "function:catcher"},
      "schedule": ["rate(5 minutes)", "cron(0 3 * * ? *)"]})json"));
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->async_retries, 0);
  EXPECT_EQ(c->async_max_age_s, 60);
  EXPECT_EQ(c->async_on_failure, "function:catcher");
  EXPECT_EQ(c->schedule, (std::vector<std::string>{"rate(5 minutes)", "cron(0 3 * * ? *)"}));
  auto round_trip = parse_config(c->to_json());
  ASSERT_TRUE(round_trip.ok());
  EXPECT_EQ(*round_trip, *c);
  auto defaults = parse_config(json::parse(R"({"runtime":"node","handler":"index.handler"})"));
  EXPECT_EQ(defaults->async_retries, 2);
  EXPECT_EQ(defaults->async_max_age_s, 21600);
  EXPECT_EQ(defaults->async_on_failure, "dlq");
  for (const char* bad : {R"j({"async": {"retries": 11}})j", R"j({"async": {"max_age_s": 59}})j",
                          R"j({"async": {"on_failure": "sqs:q"}})j",
                          R"j({"async": {"on_failure": "function:BAD NAME"}})j",
                          R"j({"async": {"other": 1}})j", R"j({"schedule": "rate(1 minute)"})j",
                          R"j({"schedule": ["every minute"]})j", R"j({"schedule": [5]})j"}) {
    json doc = json::parse(bad);
    doc["runtime"] = "node";
    doc["handler"] = "index.handler";
    auto r = parse_config(doc);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_TRUE(r.error().field.starts_with("async") || r.error().field == "schedule")
        << bad << " → " << r.error().field << ": " << r.error().message;
  }
}

TEST(Manifest, KeepAliveIsFixedOrHybrid) {
  auto c = parse_config(json::parse(R"({"runtime":"node","handler":"index.handler",
      "keep_alive": "hybrid"})"));
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->keep_alive, "hybrid");
  EXPECT_EQ(*parse_config(c->to_json()), *c);
  EXPECT_EQ(
      parse_config(json::parse(R"({"runtime":"node","handler":"index.handler"})"))->keep_alive,
      "fixed");
  auto bad = parse_config(json::parse(R"({"runtime":"node","handler":"index.handler",
      "keep_alive": "forever"})"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().field, "keep_alive");
}

TEST(Manifest, CallsNamesFunctionsOrEveryOne) {
  auto c = parse_config(json::parse(R"({"runtime":"node","handler":"index.handler",
      "calls": ["orders", "mailer-2"]})"));
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->calls, (std::vector<std::string>{"orders", "mailer-2"}));
  EXPECT_EQ(*parse_config(c->to_json()), *c);
  auto any = parse_config(json::parse(R"({"runtime":"node","handler":"index.handler",
      "calls": ["*"]})"));
  ASSERT_TRUE(any.ok());
  EXPECT_EQ(any->calls, (std::vector<std::string>{"*"}));
  EXPECT_TRUE(
      parse_config(json::parse(R"({"runtime":"node","handler":"index.handler"})"))->calls.empty())
      << "a function calls nothing unless its manifest says so";
  json too_many = json::array();
  for (int i = 0; i < 65; ++i) too_many.push_back("f" + std::to_string(i));
  for (const json& bad :
       {json("orders"), json{"Orders"}, json{"a:b"}, json{5}, json{"**"}, too_many}) {
    auto r = parse_config(json{{"runtime", "node"}, {"handler", "index.handler"}, {"calls", bad}});
    ASSERT_FALSE(r.ok()) << bad.dump();
    EXPECT_EQ(r.error().field, "calls") << bad.dump();
  }
}

}  // namespace
}  // namespace ember::registry
