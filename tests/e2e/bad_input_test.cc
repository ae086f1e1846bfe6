// Bad input everywhere a user or client reaches, end to end: each gets a 4xx with a JSON error
// that says what is wrong, the daemon stays whole (nothing half-made, every other request still
// served), and what clients got wrong is logged, rate-limited.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <iterator>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "archive_builder.h"
#include "daemon.h"
#include "daemon_test.h"

namespace ember::testing {
namespace {

using nlohmann::json;

const char* kManifest = R"({"runtime":"node","handler":"index.handler"})";
const char* kCode = "exports.handler = async (e) => e;\n";

std::string nested(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

std::string bundle_with(const std::string& manifest) {
  return ArchiveBuilder(ArchiveKind::kZip)
      .file("function.json", manifest)
      .file("index.js", kCode)
      .build();
}

struct Case {
  std::string what;
  std::string method;
  std::string target;
  std::string body;
  int status;           // expected
  std::string code;     // expected error code; for Lambda's routes, the x-amzn-ErrorType
  bool lambda = false;  // a Lambda API route: sent over the Unix socket, unsigned, as the admin
};

class BadInputE2E : public DaemonTest {
 protected:
  // Deploys a custom runtime whose bundle is `bootstrap` alone.
  void deploy_provided(const std::string& name, const char* bootstrap) {
    auto r = daemon_.admin("PUT", "/v1/functions/" + name,
                           ArchiveBuilder(ArchiveKind::kZip)
                               .file("function.json", R"({"runtime":"provided"})")
                               .file("bootstrap", bootstrap, 0755)
                               .build());
    ASSERT_EQ(r.status, 201) << r.body;
  }

  // Sends `c` and checks its answer: the status, a JSON error naming the problem.
  void check(const Case& c) {
    SCOPED_TRACE(c.what);
    auto r = c.lambda ? unix_request(daemon_.socket(), c.method, c.target, c.body)
                      : daemon_.admin(c.method, c.target, c.body);
    ASSERT_EQ(r.status, c.status) << r.body.substr(0, 500);
    json body = json::parse(r.body, nullptr, false);
    ASSERT_FALSE(body.is_discarded()) << "not JSON: " << r.body.substr(0, 500);
    if (c.lambda) {
      EXPECT_EQ(r.header("x-amzn-errortype"), c.code) << r.body;
      EXPECT_FALSE(body.value("message", std::string()).empty()) << r.body;
      return;
    }
    EXPECT_EQ(body["error"]["code"], c.code) << r.body;
    EXPECT_FALSE(body["error"]["message"].get<std::string>().empty()) << r.body;
  }
};

TEST_F(BadInputE2E, EachGetsA4xxWithAJsonErrorAndTheDaemonStaysWhole) {
  ASSERT_EQ(daemon_.admin("PUT", "/v1/functions/p", bundle_with(kManifest)).status, 201);
  const std::string deep = nested(200'000);
  const std::string deep_small = nested(30'000);  // 60 KB: under the 64 KB limit of a PATCH
  std::string deep_path;
  for (int i = 0; i < 600; ++i) deep_path += "d/";
  const std::vector<Case> cases = {
      {"a name that is not UTF-8", "PUT", "/v1/functions/%C3%28", bundle_with(kManifest), 400,
       "bad_request"},
      {"a query override that is not UTF-8", "PUT", "/v1/functions/q?handler=%FF.handler",
       bundle_with(kManifest), 400, "bad_request"},
      {"a PATCH body that is not UTF-8", "PATCH", "/v1/functions/p", "{\"env\": {\"A\": \"\xff\"}}",
       400, "bad_request"},
      {"a PATCH body of 200,000 levels (over the size limit)", "PATCH", "/v1/functions/p", deep,
       413, "payload_too_large"},
      {"a PATCH body nested 30,000 deep", "PATCH", "/v1/functions/p", deep_small, 400,
       "bad_request"},
      {"a PATCH field nested 30,000 deep", "PATCH", "/v1/functions/p",
       "{\"env\": " + deep_small + "}", 400, "bad_request"},
      {"a manifest field nested 200,000 deep", "PUT", "/v1/functions/deepenv",
       bundle_with(R"({"runtime":"node","handler":"index.handler","env":)" + deep + "}"), 400,
       "bad_request"},
      {"a manifest nested 200,000 deep", "PUT", "/v1/functions/deep", bundle_with(deep), 400,
       "bad_request"},
      {"a manifest that is not UTF-8", "PUT", "/v1/functions/utf",
       bundle_with("{\"runtime\":\"node\",\"handler\":\"index.\xc3\x28\"}"), 400, "bad_request"},
      {"a manifest of 4 MB", "PUT", "/v1/functions/huge",
       bundle_with(json{{"runtime", "node"},
                        {"handler", "index.handler"},
                        {"env", {{"BIG", std::string(4 << 20, 'x')}}}}
                       .dump()),
       400, "bad_request"},
      {"a zip bomb", "PUT", "/v1/functions/bomb",
       ArchiveBuilder(ArchiveKind::kZip)
           .file("function.json", kManifest)
           .file("index.js", kCode)
           .zeros("zeros.bin", 40 << 20)
           .build(),
       400, "bad_request"},
      {"a tree 600 directories deep", "PUT", "/v1/functions/tree",
       ArchiveBuilder(ArchiveKind::kTarGz)
           .file("function.json", kManifest)
           .file("index.js", kCode)
           .file(deep_path + "x.js", "x")
           .build(),
       400, "bad_request"},
      {"a hard link out of the bundle", "PUT", "/v1/functions/link",
       ArchiveBuilder(ArchiveKind::kTarGz)
           .file("function.json", kManifest)
           .file("index.js", kCode)
           .hardlink("passwd", "/etc/passwd")
           .build(),
       400, "bad_request"},
      {"duplicate entries", "PUT", "/v1/functions/dup",
       ArchiveBuilder(ArchiveKind::kZip)
           .file("function.json", kManifest)
           .file("index.js", kCode)
           .file("index.js", "exports.handler = async () => 'other';\n")
           .build(),
       400, "bad_request"},
      {"a KV key that is not UTF-8", "PUT", "/v1/kv/notes/%FF", "1", 400, "KvInvalidKey"},
      {"a KV value that is not UTF-8", "PUT", "/v1/kv/notes/k", "\"\xff\"", 400, "KvInvalidValue"},
      {"a KV value nested 200,000 deep", "PUT", "/v1/kv/notes/k", deep, 400, "KvInvalidValue"},
      {"an event nested 200,000 deep", "POST", "/v1/functions/p/invoke", deep, 400, "bad_request"},
      {"an event that is not UTF-8", "POST", "/v1/functions/p/invoke", "\"\xff\"", 400,
       "bad_request"},
      {"a Lambda CreateFunction whose code is not base64", "POST", "/2015-03-31/functions",
       json{{"FunctionName", "lam"},
            {"Runtime", "nodejs20.x"},
            {"Handler", "index.handler"},
            {"Role", "arn:aws:iam::000000000000:role/x"},
            {"Code", {{"ZipFile", "!!! not base64 !!!"}}}}
           .dump(),
       400, "InvalidParameterValueException", true},
      {"a Lambda Invoke payload that is not JSON", "POST", "/2015-03-31/functions/p/invocations",
       "{not json", 400, "InvalidRequestContentException", true},
  };
  for (const auto& c : cases) check(c);

  // Nothing was made of any of it, and everything else still works.
  auto list = daemon_.admin("GET", "/v1/functions").json()["functions"];
  ASSERT_EQ(list.size(), 1u) << list.dump();
  EXPECT_EQ(list[0]["name"], "p");
  EXPECT_EQ(daemon_.admin("GET", "/v1/kv/notes/k").status, 404);
  auto ok = http_request(daemon_.port(), "POST", "/v1/functions/p/invoke", R"({"a": 1})");
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.json(), json({{"a", 1}}));
}

// Every client error is logged with its route, the client and what was wrong, at most ten at
// once and then one a second: a flood of bad requests cannot flood the log.
TEST_F(BadInputE2E, ClientErrorsAreLoggedRateLimited) {
  const auto started = std::chrono::steady_clock::now();
  auto first = daemon_.admin("PUT", "/v1/functions/Bad_Name", "x");
  ASSERT_EQ(first.status, 400);
  ASSERT_TRUE(daemon_.wait_for_log("api: 400 from")) << daemon_.log();
  const std::string line = daemon_.log().substr(daemon_.log().find("api: 400 from"));
  EXPECT_NE(line.find("from 127.0.0.1"), std::string::npos) << line;
  EXPECT_NE(line.find(R"("bad_request: function name \"Bad_Name\" must match)"), std::string::npos)
      << line;
  // A routed one names its route and function.
  ASSERT_EQ(daemon_.admin("PATCH", "/v1/functions/nope", "{}").status, 404);
  EXPECT_TRUE(daemon_.wait_for_log(R"(api: 404 on patch [fn="nope"] from 127.0.0.1)"))
      << daemon_.log();
  for (int i = 0; i < 60; ++i) {
    ASSERT_EQ(daemon_.admin("GET", "/v1/functions/missing-" + std::to_string(i)).status, 404);
  }
  // One more after the limiter has refilled reports what it held back.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  ASSERT_EQ(daemon_.admin("GET", "/v1/functions/last-one").status, 404);
  ASSERT_TRUE(daemon_.wait_for_log("last-one")) << daemon_.log();
  const std::string log = daemon_.log();
  const std::regex client_error("api: 4");
  const auto lines = std::distance(std::sregex_iterator(log.begin(), log.end(), client_error),
                                   std::sregex_iterator());
  // Ten at once, then one a second (and one spare for a second begun).
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started)
          .count();
  EXPECT_LE(lines, 10 + seconds + 1) << log;
  EXPECT_LT(lines, 62) << "every one of the 62 bad requests was logged";
  EXPECT_TRUE(std::regex_search(log, std::regex("\\(([0-9]+) similar messages suppressed\\)")))
      << log;
}

// A custom runtime's answer is the function's to choose: one nested 300,000 deep goes back
// verbatim on every route (an HTTP trigger reads an answer only when it is an object with a
// statusCode), and the daemon, which never builds it, stays up.
TEST_F(BadInputE2E, AFunctionAnsweringDeeplyNestedJsonCannotHurtTheDaemon) {
  if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "/usr/bin/python3 is not installed";
  const char* bootstrap = R"(#!/usr/bin/python3 -I
import http.client, os
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
conn = http.client.HTTPConnection(host, int(port))
deep = "[" * 300000 + "]" * 300000
while True:
    conn.request("GET", "/2018-06-01/runtime/invocation/next")
    r = conn.getresponse()
    r.read()
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    conn.request("POST", "/2018-06-01/runtime/invocation/" + rid + "/response", deep,
                 {"Content-Type": "application/json"})
    conn.getresponse().read()
)";
  deploy_provided("deep", bootstrap);
  auto direct = http_request(daemon_.port(), "POST", "/v1/functions/deep/invoke", "{}");
  EXPECT_EQ(direct.status, 200);
  EXPECT_EQ(direct.body.size(), 600'000u);
  auto lambda =
      http_request(daemon_.port(), "POST", "/2015-03-31/functions/deep/invocations", "{}");
  EXPECT_EQ(lambda.status, 200);
  EXPECT_EQ(lambda.body.size(), 600'000u);
  // Not an object with a statusCode: sent as the body, as it came.
  auto trigger = http_request(daemon_.port(), "GET", "/fn/deep/");
  EXPECT_EQ(trigger.status, 200) << trigger.body.substr(0, 300);
  EXPECT_EQ(trigger.body.size(), 600'000u);
  EXPECT_EQ(http_request(daemon_.port(), "GET", "/healthz").status, 200);
}

// A custom runtime may answer bytes that are not UTF-8 (with their Content-Type): a call gets
// them as they are, and an asynchronous event that gets them succeeds with them as its result.
TEST_F(BadInputE2E, AFunctionAnsweringBytesThatAreNotUtf8IsServedSyncAndAsync) {
  if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "/usr/bin/python3 is not installed";
  const char* bootstrap = R"(#!/usr/bin/python3 -I
import http.client, os
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
conn = http.client.HTTPConnection(host, int(port))
while True:
    conn.request("GET", "/2018-06-01/runtime/invocation/next")
    r = conn.getresponse()
    r.read()
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    conn.request("POST", "/2018-06-01/runtime/invocation/" + rid + "/response", b"\xff\xfe raw",
                 {"Content-Type": "application/octet-stream"})
    conn.getresponse().read()
)";
  deploy_provided("bytes", bootstrap);
  auto direct = http_request(daemon_.port(), "POST", "/v1/functions/bytes/invoke", "{}");
  EXPECT_EQ(direct.status, 200);
  EXPECT_EQ(direct.body, "\xff\xfe raw");
  auto queued = http_request(daemon_.port(), "POST", "/v1/functions/bytes/invoke?mode=async", "{}");
  ASSERT_EQ(queued.status, 202) << queued.body;
  auto done = daemon_.wait_for_invocation(queued.json()["id"], "succeeded");
  EXPECT_EQ(done["status"], "succeeded") << done.dump();
}

}  // namespace
}  // namespace ember::testing
