// `runtime: provided`: a bundle's own bootstrap speaks the Lambda Runtime API to Ember. The
// custom-runtime tutorial's bash bootstrap (a new connection per request, plain text answers),
// and a Python bootstrap on one keep-alive connection that exercises the API's edges: the
// headers and environment Lambda gives, errors, init errors, exits before and during a call,
// a repeated `next`, a wrong request id and an oversized response.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "archive_builder.h"
#include "daemon_test.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

using nlohmann::json;

// The tutorial's runtime, written for bash (Debian's /bin/sh is dash).
constexpr const char* kBashBootstrap = R"sh(#!/bin/bash
set -euo pipefail
source "$LAMBDA_TASK_ROOT/$(echo "$_HANDLER" | cut -d. -f1).sh"
HEADERS="$(mktemp)"
while true; do
  EVENT_DATA=$(curl -sS -LD "$HEADERS" "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/next")
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  RESPONSE=$($(echo "$_HANDLER" | cut -d. -f2) "$EVENT_DATA")
  curl -sS -X POST "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/$REQUEST_ID/response" -d "$RESPONSE" >/dev/null
done
)sh";

constexpr const char* kBashFunction = R"sh(function handler () {
  echo "got $1" 1>&2
  echo "Echoing request: '$1'"
}
)sh";

// One keep-alive connection; what it does with each event is the event's "mode".
constexpr const char* kPythonBootstrap = R"py(#!/usr/bin/python3 -I
import http.client, json, os, sys
fd3_open = os.path.exists("/proc/self/fd/3")  # before this process opens anything itself
api = os.environ["AWS_LAMBDA_RUNTIME_API"]
host, port = api.split(":")
conn = http.client.HTTPConnection(host, int(port))
base = "/2018-06-01/runtime"

def call(method, path, body=None, headers={}):
    conn.request(method, base + path, body=body, headers=headers)
    r = conn.getresponse()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()

mode = open(os.environ["LAMBDA_TASK_ROOT"] + "/mode").read().strip()
if mode == "init-error":
    call("POST", "/init/error", json.dumps({"errorType": "Runtime.ConfigError", "errorMessage": "no DATABASE_URL"}),
         {"Lambda-Runtime-Function-Error-Type": "Runtime.ConfigError"})
    sys.exit(1)
if mode == "exit-at-init":
    sys.exit(3)
while True:
    status, h, body = call("GET", "/invocation/next")
    rid = h["lambda-runtime-aws-request-id"]
    event = json.loads(body)
    what = event.get("do")
    if what == "env":
        again = call("GET", "/invocation/next")
        out = {k: os.environ.get(k) for k in ("_HANDLER", "LAMBDA_TASK_ROOT", "AWS_LAMBDA_FUNCTION_NAME",
               "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_REGION",
               "AWS_LAMBDA_LOG_GROUP_NAME")}
        out["deadline"] = h.get("lambda-runtime-deadline-ms")
        out["arn"] = h.get("lambda-runtime-invoked-function-arn")
        out["trace"] = h.get("lambda-runtime-trace-id")
        out["again_same_id"] = again[1]["lambda-runtime-aws-request-id"] == rid
        out["wrong_id"] = call("POST", "/invocation/not-" + rid + "/response", "1")[0]
        out["fd3_closed"] = not fd3_open
        call("POST", "/invocation/" + rid + "/response", json.dumps(out))
    elif what == "error":
        call("POST", "/invocation/" + rid + "/error",
             json.dumps({"errorType": "ValueError", "errorMessage": "bad input", "stackTrace": ["at line 1"]}))
    elif what == "ptrace":
        import ctypes
        ctypes.CDLL(None).ptrace(0, 0, 0, 0)  # PTRACE_TRACEME: the sandbox kills for it
    elif what == "crash":
        print("crashing", flush=True)
        sys.exit(4)
    elif what == "big":
        call("POST", "/invocation/" + rid + "/response", json.dumps({"blob": "b" * (2 << 20)}))
    elif what == "huge":
        call("POST", "/invocation/" + rid + "/response", "\"" + "x" * (7 << 20) + "\"")
    elif what == "once":
        call("POST", "/invocation/" + rid + "/response", json.dumps({"pid": os.getpid(), "n": event["n"]}))
        sys.exit(0)
    else:
        call("POST", "/invocation/" + rid + "/response", json.dumps({"echo": event}))
)py";

class ProvidedE2E : public DaemonTest {
 protected:
  void deploy(const std::string& name, ArchiveBuilder bundle) {
    auto r = daemon_.admin("PUT", "/v1/functions/" + name, bundle.build());
    ASSERT_EQ(r.status, 201) << r.body;
  }
  void deploy_python(const std::string& name, const std::string& mode) {
    deploy(name,
           std::move(ArchiveBuilder(ArchiveKind::kZip)
                         .file("function.json", R"({"runtime":"provided","handler":"app.handler"})")
                         .file("bootstrap", kPythonBootstrap, 0755)
                         .file("mode", mode)));
  }
  HttpResponse invoke(const std::string& name, const std::string& body) {
    return http_request(daemon_.port(), "POST", "/v1/functions/" + name + "/invoke", body);
  }
};

TEST_F(ProvidedE2E, TheTutorialBashRuntimeAnswersWithPlainText) {
  deploy(
      "bash-runtime",
      std::move(ArchiveBuilder(ArchiveKind::kZip)
                    .file("function.json", R"({"runtime":"provided","handler":"function.handler"})")
                    .file("bootstrap", kBashBootstrap, 0755)
                    .file("function.sh", kBashFunction, 0755)));
  for (const char* text : {"Hello", "again"}) {
    auto r = invoke("bash-runtime", json{{"text", text}}.dump());
    ASSERT_EQ(r.status, 200) << r.body << daemon_.log();
    EXPECT_EQ(r.body, ("Echoing request: '" + json{{"text", text}}.dump() + "'"));
    EXPECT_EQ(r.header("content-type"), "application/octet-stream");
  }
  auto logs = daemon_.admin("GET", "/v1/functions/bash-runtime/logs");
  EXPECT_NE(logs.body.find(R"(got {\"text\":\"Hello\"})"), std::string::npos) << logs.body;
}

TEST_F(ProvidedE2E, TheRuntimeApiGivesLambdasHeadersEnvironmentAndEdges) {
  deploy_python("edges", "serve");
  auto r = invoke("edges", R"({"do":"env"})");
  ASSERT_EQ(r.status, 200) << r.body << daemon_.log();
  json j = r.json();
  EXPECT_EQ(j["_HANDLER"], "app.handler");
  EXPECT_EQ(j["LAMBDA_TASK_ROOT"], "/var/task");
  EXPECT_EQ(j["AWS_LAMBDA_FUNCTION_NAME"], "edges");
  EXPECT_EQ(j["AWS_LAMBDA_FUNCTION_VERSION"], "1");
  EXPECT_EQ(j["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "128");
  EXPECT_EQ(j["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/edges");
  EXPECT_FALSE(j["AWS_REGION"].get<std::string>().empty());
  EXPECT_GT(std::stoll(j["deadline"].get<std::string>()), 1'700'000'000'000LL);
  EXPECT_TRUE(j["arn"].get<std::string>().ends_with(":function:edges")) << j["arn"];
  EXPECT_TRUE(j["trace"].get<std::string>().starts_with("Root=1-")) << j["trace"];
  EXPECT_EQ(j["again_same_id"], true) << "a repeated next gets the call that is out";
  EXPECT_EQ(j["wrong_id"], 400);
  EXPECT_EQ(j["fd3_closed"], true) << "the bootstrap never holds the daemon's channel";
  // The same instance serves on.
  auto echo = invoke("edges", R"({"n":2})");
  ASSERT_EQ(echo.status, 200) << echo.body;
  EXPECT_EQ(echo.json()["echo"]["n"], 2);
}

TEST_F(ProvidedE2E, ErrorsInitErrorsAndExitsReachTheCaller) {
  deploy_python("fails", "serve");
  auto error = invoke("fails", R"({"do":"error"})");
  EXPECT_EQ(error.status, 500) << error.body;
  EXPECT_EQ(error.header("x-ember-function-error"), "Unhandled");
  EXPECT_EQ(error.json()["errorType"], "ValueError");
  EXPECT_EQ(error.json()["errorMessage"], "bad input");
  EXPECT_EQ(error.json()["stack"], json::array({"at line 1"}));

  // The kernel kills the bootstrap, not the worker, for a forbidden system call; the worker
  // says so, and the call is the sandbox violation it is.
  auto ptrace = invoke("fails", R"({"do":"ptrace"})");
  EXPECT_EQ(ptrace.status, 502) << ptrace.body;
  EXPECT_EQ(ptrace.json()["error"]["code"], "sandbox_violation") << ptrace.body;
  EXPECT_EQ(ptrace.header("x-ember-function-error"), "Runtime.SandboxViolation");

  auto crash = invoke("fails", R"({"do":"crash"})");
  EXPECT_EQ(crash.status, 502) << crash.body;
  EXPECT_NE(crash.body.find("4"), std::string::npos) << crash.body;
  EXPECT_EQ(invoke("fails", R"({"n":1})").status, 200) << "a new instance serves the next call";

  // A response larger than the channel's buffer reaches the caller whole.
  auto big = invoke("fails", R"({"do":"big"})");
  ASSERT_EQ(big.status, 200) << big.body.substr(0, 300);
  EXPECT_EQ(big.json()["blob"].get<std::string>().size(), size_t{2} << 20);

  auto huge = invoke("fails", R"({"do":"huge"})");
  EXPECT_EQ(huge.status, 500) << huge.body.substr(0, 300);
  EXPECT_EQ(huge.json()["errorType"], "Function.ResponseSizeTooLarge");

  deploy_python("no-config", "init-error");
  auto init = invoke("no-config", "{}");
  EXPECT_EQ(init.status, 502) << init.body;
  EXPECT_NE(init.body.find("no DATABASE_URL"), std::string::npos) << init.body;

  deploy_python("gone", "exit-at-init");
  auto gone = invoke("gone", "{}");
  EXPECT_EQ(gone.status, 502) << gone.body;
  EXPECT_NE(gone.body.find("Runtime.ExitError"), std::string::npos) << gone.body;
}

TEST_F(ProvidedE2E, ABootstrapThatExitsAfterEachCallIsStartedAgainForTheNext) {
  deploy_python("once", "serve");
  std::set<int64_t> pids;
  for (int n = 1; n <= 3; ++n) {
    auto r = invoke("once", json{{"do", "once"}, {"n", n}}.dump());
    ASSERT_EQ(r.status, 200) << r.body << daemon_.log();
    EXPECT_EQ(r.json()["n"], n);
    pids.insert(r.json()["pid"].get<int64_t>());
  }
  EXPECT_EQ(pids.size(), 3u) << "each call was served by a new bootstrap process";
  auto fn = daemon_.admin("GET", "/v1/functions/once");
  EXPECT_EQ(fn.json()["instances"]["starting"].get<int>() +
                fn.json()["instances"]["idle"].get<int>() +
                fn.json()["instances"]["busy"].get<int>(),
            1)
      << "in the same instance: " << fn.body;
}

// A worker is untrusted: a media type it sends with a RESULT cannot add headers to the answer.
TEST_F(ProvidedE2E, AWorkersContentTypeCannotSplitTheResponse) {
  deploy("forger",
         std::move(ArchiveBuilder(ArchiveKind::kZip)
                       .file("function.json", R"({"runtime":"node","handler":"index.handler"})")
                       .file("index.js", R"js(const fs = require('fs');
exports.handler = async () => {
  // The first call on a new instance is call 1: answer it with a forged frame of our own.
  const meta = Buffer.from(JSON.stringify({ contentType: 'text/plain\r\nX-Forged: yes' }));
  const body = Buffer.from('forged');
  const header = Buffer.alloc(16);
  header.writeUInt32LE(4, 0); header.writeUInt32LE(1, 4);
  header.writeUInt32LE(meta.length, 8); header.writeUInt32LE(body.length, 12);
  fs.writeSync(3, Buffer.concat([header, meta, body]));
  await new Promise((r) => setTimeout(r, 200));
  return 'late';
};
)js")));
  auto r = invoke("forger", "{}");
  EXPECT_TRUE(r.header("x-forged").empty()) << "a header was injected";
  EXPECT_EQ(r.body, "forged") << "the forged frame answered call 1";
  EXPECT_EQ(r.header("content-type"), "application/octet-stream");
}

// Lambda's own Node.js runtime interface client as the bootstrap, unmodified: it polls and
// answers over the Runtime API through its native client (libcurl, keep-alive).
TEST_F(ProvidedE2E, LambdasNodeRuntimeInterfaceClientRunsUnmodified) {
  namespace fs = std::filesystem;
  const fs::path ric = fs::path(EMBER_CLIENTS_DIR) / "node_modules" / "aws-lambda-ric";
  if (!fs::exists(ric / "dist" / "rapid-client.node")) {
    GTEST_SKIP() << "aws-lambda-ric is not built in " << ric
                 << " (scripts/setup --test builds it with npm ci; it needs autoconf, automake, "
                    "libtool, cmake and g++)";
  }
  auto read = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  ArchiveBuilder bundle(ArchiveKind::kZip);
  bundle
      .file("function.json", R"({"runtime":"provided","handler":"index.handler","memory_mb":256})")
      .file("bootstrap", R"sh(#!/bin/sh
cd "$LAMBDA_TASK_ROOT" && exec /usr/bin/node node_modules/aws-lambda-ric/bin/index.mjs "$_HANDLER"
)sh",
            0755)
      .file("index.js", R"js(exports.handler = async (event, context) => {
  console.log('ric got', JSON.stringify(event));
  if (event.fail) throw new Error('ric failure');
  return { requestId: context.awsRequestId, fn: context.functionName,
           left: context.getRemainingTimeInMillis() };
};
)js");
  for (const char* file : {"package.json", "bin/index.mjs"}) {
    bundle.file(std::string("node_modules/aws-lambda-ric/") + file, read(ric / file));
  }
  for (const auto& e : fs::directory_iterator(ric / "dist")) {
    bundle.file("node_modules/aws-lambda-ric/dist/" + e.path().filename().string(), read(e.path()));
  }
  deploy("ric", std::move(bundle));
  auto ok = invoke("ric", R"({"a":1})");
  ASSERT_EQ(ok.status, 200) << ok.body << daemon_.log();
  EXPECT_EQ(ok.json()["requestId"], ok.header("x-ember-request-id"));
  EXPECT_EQ(ok.json()["fn"], "ric");
  EXPECT_GT(ok.json()["left"].get<int64_t>(), 0);
  auto failed = invoke("ric", R"({"fail":true})");
  EXPECT_EQ(failed.status, 500) << failed.body;
  EXPECT_EQ(failed.json()["errorType"], "Error");
  EXPECT_EQ(failed.json()["errorMessage"], "ric failure");
  EXPECT_FALSE(failed.json()["stack"].empty()) << "its trace becomes the stack";
  auto logs = daemon_.admin("GET", "/v1/functions/ric/logs");
  EXPECT_NE(logs.body.find(R"(ric got {\"a\":1})"), std::string::npos) << logs.body;
}

}  // namespace
}  // namespace ember::testing
