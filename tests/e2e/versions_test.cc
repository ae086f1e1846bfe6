// Versions and aliases as a user meets them: invoking a version by number, aliases that name a
// version with an optional canary share, /fn/NAME:ALIAS, the Lambda Qualifier; and the rough
// edges of the function API: a paginated list, /readyz while draining, readable JSON errors.
#include <gtest/gtest.h>
#include <signal.h>

#include <map>
#include <thread>

#include "archive_builder.h"
#include "daemon_test.h"
#include "eventually.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

using nlohmann::json;

// A bundle whose handler answers which version of the code it is and what the context says.
std::string bundle(const std::string& tag, const std::string& auth = "none") {
  json manifest = {{"runtime", "node"}, {"handler", "index.handler"}, {"auth", auth}};
  return ArchiveBuilder(ArchiveKind::kZip)
      .file("function.json", manifest.dump())
      .file("index.js", "exports.handler = async (event, context) => ({ code: '" + tag +
                            "', arn: context.invokedFunctionArn,"
                            " version: context.functionVersion });\n")
      .build();
}

class VersionsE2E : public DaemonTest {
 protected:
  void deploy(const std::string& name, const std::string& tag, int expect_version,
              const std::string& auth = "none") {
    auto r = daemon_.admin("PUT", "/v1/functions/" + name, bundle(tag, auth));
    ASSERT_TRUE(r.status == 200 || r.status == 201) << r.body;
    ASSERT_EQ(r.json()["active_version"], expect_version) << r.body;
  }
  HttpResponse invoke(const std::string& target, const Headers& headers = {}) {
    return http_request(daemon_.port(), "POST", target, "{}", headers);
  }
  const Headers admin_{{"Authorization", std::string("Bearer ") + kTestToken}};
};

TEST_F(VersionsE2E, AVersionNamedByNumberRunsThatVersion) {
  deploy("f", "one", 1);
  deploy("f", "two", 2);
  auto active = invoke("/v1/functions/f/invoke");
  ASSERT_EQ(active.status, 200) << active.body;
  EXPECT_EQ(active.json()["code"], "two");
  EXPECT_EQ(active.header("x-ember-version"), "2");
  EXPECT_EQ(active.json()["arn"], "arn:aws:lambda:us-east-1:000000000000:function:f");

  // A version by number is not published: it needs a token (the admin token or a key).
  EXPECT_EQ(invoke("/v1/functions/f/invoke?version=1").status, 401);
  EXPECT_EQ(http_request(daemon_.port(), "GET", "/fn/f:1/anything").status, 401);
  EXPECT_EQ(invoke("/v1/functions/f/invoke?version=2").status, 200) << "the active one is open";
  auto old = invoke("/v1/functions/f/invoke?version=1", admin_);
  ASSERT_EQ(old.status, 200) << old.body;
  EXPECT_EQ(old.json()["code"], "one");
  EXPECT_EQ(old.json()["version"], "1");
  EXPECT_EQ(old.header("x-ember-version"), "1");
  EXPECT_EQ(old.json()["arn"], "arn:aws:lambda:us-east-1:000000000000:function:f:1");

  auto trigger = http_request(daemon_.port(), "GET", "/fn/f:1/anything", "", admin_);
  ASSERT_EQ(trigger.status, 200) << trigger.body;
  EXPECT_EQ(trigger.json()["code"], "one");

  auto missing = invoke("/v1/functions/f/invoke?version=7", admin_);
  EXPECT_EQ(missing.status, 404);
  EXPECT_NE(missing.body.find("no version 7"), std::string::npos) << missing.body;
  // The active version is still what an unqualified call gets.
  EXPECT_EQ(invoke("/v1/functions/f/invoke").json()["code"], "two");
}

TEST_F(VersionsE2E, AnOlderOpenVersionDoesNotOpenAProtectedFunction) {
  deploy("f", "open", 1, "none");
  deploy("f", "locked", 2, "token");
  EXPECT_EQ(invoke("/v1/functions/f/invoke?version=1").status, 401);
  EXPECT_EQ(http_request(daemon_.port(), "GET", "/fn/f:1/").status, 401);
  auto with_token = invoke("/v1/functions/f/invoke?version=1", admin_);
  EXPECT_EQ(with_token.status, 200) << with_token.body;
  // An alias publishes a version; one whose canary is protected needs a token on every call,
  // not only on the share the canary draws.
  deploy("f", "open again", 3, "none");
  ASSERT_EQ(
      daemon_.admin("POST", "/v1/functions/f/aliases", R"({"name": "pub", "version": 1})").status,
      201);
  EXPECT_EQ(invoke("/v1/functions/f/invoke?alias=pub").status, 200);
  ASSERT_EQ(daemon_
                .admin("PUT", "/v1/functions/f/aliases/pub",
                       R"({"version": 1, "canary": {"version": 2, "weight": 0.01}})")
                .status,
            200);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(invoke("/v1/functions/f/invoke?alias=pub").status, 401);
}

TEST_F(VersionsE2E, AliasesRouteCallsAndSplitACanary) {
  deploy("f", "one", 1);
  deploy("f", "two", 2);
  auto created = daemon_.admin("POST", "/v1/functions/f/aliases",
                               R"({"name": "live", "version": 1, "description": "prod"})");
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(created.header("location"), "/v1/functions/f/aliases/live");
  EXPECT_EQ(created.json()["version"], 1);
  EXPECT_EQ(
      daemon_.admin("POST", "/v1/functions/f/aliases", R"({"name": "live", "version": 2})").status,
      409);
  EXPECT_EQ(
      daemon_.admin("POST", "/v1/functions/f/aliases", R"({"name": "x", "version": 5})").status,
      404);
  EXPECT_EQ(
      daemon_.admin("POST", "/v1/functions/f/aliases", R"({"name": "123", "version": 1})").status,
      400);

  auto through_url = http_request(daemon_.port(), "GET", "/fn/f:live/page");
  ASSERT_EQ(through_url.status, 200) << through_url.body;
  EXPECT_EQ(through_url.json()["code"], "one");
  EXPECT_EQ(through_url.json()["arn"], "arn:aws:lambda:us-east-1:000000000000:function:f:live");
  EXPECT_EQ(invoke("/v1/functions/f/invoke?alias=live").json()["code"], "one");
  EXPECT_EQ(http_request(daemon_.port(), "GET", "/fn/f:nope/").status, 404);

  // Half the calls to version 2: over 60 calls both run, in roughly equal shares.
  auto canary = daemon_.admin("PUT", "/v1/functions/f/aliases/live",
                              R"({"version": 1, "canary": {"version": 2, "weight": 0.5}})");
  ASSERT_EQ(canary.status, 200) << canary.body;
  std::map<std::string, int> seen;
  for (int i = 0; i < 60; ++i) {
    auto r = invoke("/v1/functions/f/invoke?alias=live");
    ASSERT_EQ(r.status, 200) << r.body;
    ++seen[r.json()["code"].get<std::string>()];
    EXPECT_EQ(r.header("x-ember-version"), r.json()["code"] == "one" ? "1" : "2");
  }
  EXPECT_GE(seen["one"], 10);
  EXPECT_GE(seen["two"], 10);

  auto list = daemon_.admin("GET", "/v1/functions/f/aliases");
  ASSERT_EQ(list.status, 200);
  ASSERT_EQ(list.json()["aliases"].size(), 1u);
  EXPECT_EQ(list.json()["aliases"][0]["canary"]["version"], 2);
  EXPECT_EQ(daemon_.admin("GET", "/v1/functions/f").json()["aliases"][0]["name"], "live");

  // Saved: after a restart the alias still routes.
  ASSERT_EQ(daemon_.admin("PUT", "/v1/functions/f/aliases/live", R"({"version": 1})").status, 200);
  ASSERT_EQ(daemon_.stop(SIGTERM), 0);
  ASSERT_TRUE(daemon_.start()) << daemon_.log();
  EXPECT_EQ(invoke("/v1/functions/f/invoke?alias=live").json()["code"], "one");

  EXPECT_EQ(daemon_.admin("DELETE", "/v1/functions/f/aliases/live").status, 204);
  EXPECT_EQ(daemon_.admin("GET", "/v1/functions/f/aliases/live").status, 404);
  EXPECT_EQ(invoke("/v1/functions/f/invoke?alias=live").status, 404);
}

TEST_F(VersionsE2E, TheLambdaQualifierNamesAVersionOrAnAlias) {
  deploy("f", "one", 1);
  deploy("f", "two", 2);
  ASSERT_EQ(
      daemon_.admin("POST", "/v1/functions/f/aliases", R"({"name":"live","version":1})").status,
      201);
  const std::string path = "/2015-03-31/functions/f/invocations";
  auto by_query = invoke(path + "?Qualifier=live");
  ASSERT_EQ(by_query.status, 200) << by_query.body;
  EXPECT_EQ(by_query.json()["code"], "one");
  EXPECT_EQ(by_query.header("x-amz-executed-version"), "1");
  // A version by number needs a signature, as on Ember's routes (aws lambda invoke --qualifier
  // signs; e2e_lambda_clients).
  auto by_name = invoke("/2015-03-31/functions/f%3A1/invocations");
  EXPECT_EQ(by_name.status, 403);
  EXPECT_EQ(by_name.header("x-amzn-errortype"), "MissingAuthenticationTokenException");
  auto latest = invoke(path + "?Qualifier=%24LATEST");
  EXPECT_EQ(latest.json()["code"], "two");
  EXPECT_EQ(latest.header("x-amz-executed-version"), "2");
  auto both = invoke("/2015-03-31/functions/f%3A1/invocations?Qualifier=live");
  EXPECT_EQ(both.status, 400);
  EXPECT_EQ(both.header("x-amzn-errortype"), "InvalidParameterValueException");
  auto missing = invoke(path + "?Qualifier=beta");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.header("x-amzn-errortype"),
            "ResourceNotFoundException");  // A method the Lambda API does not take is refused in
                                           // Lambda's format too.
  auto wrong = http_request(daemon_.port(), "GET", path);
  EXPECT_EQ(wrong.status, 405);
  EXPECT_EQ(wrong.header("x-amzn-errortype"), "UnknownOperationException");
  EXPECT_EQ(wrong.header("allow"), "POST");
}

TEST_F(VersionsE2E, ACustomRuntimeIsToldTheQualifierInTheArn) {
  // A bootstrap that answers each call with the ARN header of its `next`.
  const std::string bootstrap = R"py(#!/usr/bin/python3 -S
import json, os, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
while True:
    with urllib.request.urlopen(api + "next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        arn = r.headers["Lambda-Runtime-Invoked-Function-Arn"]
        r.read()
    body = json.dumps({"arn": arn}).encode()
    urllib.request.urlopen(urllib.request.Request(api + rid + "/response", data=body)).read()
)py";
  json manifest = {{"runtime", "provided"}};
  for (int v = 1; v <= 2; ++v) {
    auto r = daemon_.admin("PUT", "/v1/functions/p",
                           ArchiveBuilder(ArchiveKind::kZip)
                               .file("function.json", manifest.dump())
                               .file("bootstrap", bootstrap + "# " + std::to_string(v) + "\n", 0755)
                               .build());
    ASSERT_EQ(r.json()["active_version"], v) << r.body;
  }
  ASSERT_EQ(
      daemon_.admin("POST", "/v1/functions/p/aliases", R"({"name":"live","version":1})").status,
      201);
  const std::string arn = "arn:aws:lambda:us-east-1:000000000000:function:p";
  auto plain = invoke("/v1/functions/p/invoke");
  ASSERT_EQ(plain.status, 200) << plain.body;
  EXPECT_EQ(plain.json()["arn"], arn);
  auto live = http_request(daemon_.port(), "GET", "/fn/p:live/");
  ASSERT_EQ(live.status, 200) << live.body;
  EXPECT_EQ(live.json()["arn"], arn + ":live");
  EXPECT_EQ(live.header("x-ember-version"), "1");
}

TEST_F(VersionsE2E, TheFunctionListIsPagedAndSummarised) {
  for (const char* name : {"e", "b", "d", "a", "c"}) deploy(name, "one", 1);
  deploy("c", "two", 2);
  std::vector<std::string> names;
  std::string cursor;
  int pages = 0;
  while (true) {
    auto page =
        daemon_.admin("GET", "/v1/functions?limit=2" + (cursor.empty() ? "" : "&cursor=" + cursor));
    ASSERT_EQ(page.status, 200) << page.body;
    auto j = page.json();
    ASSERT_LE(j["functions"].size(), 2u);
    for (const auto& f : j["functions"]) {
      names.push_back(f["name"]);
      EXPECT_TRUE(f["versions"].is_array());
      for (const auto& v : f["versions"]) EXPECT_TRUE(v.is_number_integer()) << f.dump();
      EXPECT_TRUE(f.contains("config"));
    }
    ++pages;
    if (!j.contains("next_cursor")) break;
    cursor = j["next_cursor"];
    ASSERT_LT(pages, 10);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(pages, 3);
  auto c = daemon_.admin("GET", "/v1/functions?cursor=b&limit=1").json();
  EXPECT_EQ(c["functions"][0]["versions"], json::array({1, 2}));
  EXPECT_EQ(daemon_.admin("GET", "/v1/functions?limit=0").status, 400);
  EXPECT_EQ(daemon_.admin("GET", "/v1/functions?limit=x").status, 400);
  EXPECT_EQ(daemon_.admin("GET", "/v1/functions?colour=red").status, 400);
}

TEST_F(VersionsE2E, ReadyzAnswers503WhileCallsDrain) {
  json manifest = {{"runtime", "node"}, {"handler", "index.handler"}};
  auto r = daemon_.admin(
      "PUT", "/v1/functions/slow",
      ArchiveBuilder(ArchiveKind::kZip)
          .file("function.json", manifest.dump())
          .file("index.js",
                "exports.handler = () => new Promise((r) => setTimeout(() => r('done'), 1500));\n")
          .build());
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(http_request(daemon_.port(), "GET", "/readyz").status, 200);
  HttpResponse slow;
  std::thread caller([&] { slow = invoke("/v1/functions/slow/invoke"); });
  ASSERT_TRUE(eventually(
      [&] { return daemon_.admin("GET", "/v1/functions/slow").json()["instances"]["busy"] == 1; }));
  ASSERT_EQ(::kill(daemon_.pid(), SIGTERM), 0);
  // A new connection is answered, not refused: not ready.
  HttpResponse ready;
  EXPECT_TRUE(eventually([&] {
    ready = http_request(daemon_.port(), "GET", "/readyz");
    return ready.status == 503;
  })) << ready.status
      << " " << ready.body;
  EXPECT_NE(ready.body.find("draining"), std::string::npos) << ready.body;
  // Any other request on a new connection is turned away: the call would not get to finish.
  auto late = invoke("/v1/functions/slow/invoke");
  EXPECT_TRUE(late.status == 503 || late.status == 0) << late.status << " " << late.body;
  caller.join();
  EXPECT_EQ(slow.status, 200) << slow.body;
  EXPECT_EQ(slow.body, "\"done\"");
  EXPECT_EQ(daemon_.wait_exit(10000), 0) << daemon_.log();
}

TEST_F(VersionsE2E, ABadJsonBodyIsDescribedWithoutTheParsersWords) {
  deploy("f", "one", 1);
  auto r = daemon_.admin("PATCH", "/v1/functions/f", "{\"memory_mb\": 256,\n \"x\": oops}");
  ASSERT_EQ(r.status, 400) << r.body;
  const std::string message = r.json()["error"]["message"];
  EXPECT_EQ(message, "request body is not valid JSON: unexpected input at line 2, column 7");
  EXPECT_EQ(r.body.find("json.exception"), std::string::npos);
}

}  // namespace
}  // namespace ember::testing
