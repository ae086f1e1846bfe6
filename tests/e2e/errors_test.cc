// A handler's error reaches the caller as the documented 500 (errorType, errorMessage, stack,
// X-Ember-Function-Error: Unhandled) even when the handler used up its descriptors, its memory or
// its recursion depth, or threw something hostile to describe: the shim never dies reporting it.
#include <gtest/gtest.h>
#include <unistd.h>

#include "archive_builder.h"
#include "daemon_test.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

using nlohmann::json;

class ErrorsE2E : public DaemonTest {
 protected:
  bool deploy(const std::string& name, const std::string& runtime, const std::string& code) {
    const bool node = runtime == "node";
    if (::access(node ? "/usr/bin/node" : "/usr/bin/python3", X_OK) != 0) return false;
    json manifest = {{"runtime", runtime},
                     {"handler", node ? "index.handler" : "main.handler"},
                     {"memory_mb", 256}};
    auto r = daemon_.admin("PUT", "/v1/functions/" + name,
                           ArchiveBuilder(ArchiveKind::kZip)
                               .file("function.json", manifest.dump())
                               .file(node ? "index.js" : "main.py", code)
                               .build());
    EXPECT_EQ(r.status, 201) << r.body;
    return true;
  }
  HttpResponse invoke(const std::string& name, const std::string& body = "{}") {
    return http_request(daemon_.port(), "POST", "/v1/functions/" + name + "/invoke", body);
  }
  // The documented handler-error answer; returns its JSON body.
  json expect_reported(const HttpResponse& r) {
    EXPECT_EQ(r.status, 500) << r.body;
    EXPECT_EQ(r.header("x-ember-function-error"), "Unhandled") << r.body;
    json body = json::parse(r.body, nullptr, false);
    EXPECT_TRUE(body.is_object()) << r.body;
    if (!body.is_object()) return json::object();
    EXPECT_TRUE(body["errorType"].is_string()) << r.body;
    EXPECT_TRUE(body["errorMessage"].is_string()) << r.body;
    EXPECT_TRUE(body["stack"].is_array()) << r.body;
    return body;
  }
};

TEST_F(ErrorsE2E, PythonOutOfDescriptors) {
  if (!deploy("fds", "python", R"(
def handler(event, context):
    held = []
    try:
        while True:
            held.append(open("/dev/null"))
    except OSError:
        pass
    raise ValueError(f"raised with {len(held)} descriptors open")
)"))
    GTEST_SKIP() << "python3 is not installed";
  auto body = expect_reported(invoke("fds"));
  EXPECT_EQ(body["errorType"], "ValueError");
  EXPECT_NE(body["errorMessage"].get<std::string>().find("descriptors open"), std::string::npos);
  EXPECT_NE(body["stack"].dump().find("main.py"), std::string::npos) << body;
  EXPECT_EQ(invoke("fds").status, 500) << "the instance survives and reports again";
}

TEST_F(ErrorsE2E, PythonOutOfMemory) {
  // The handler lowers its own address-space limit to just above what it uses, fills it to the
  // last byte it can get, and raises while holding all of it.
  if (!deploy("oom", "python", R"(
import resource

def handler(event, context):
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + (48 << 20), resource.RLIM_INFINITY))
    held = []
    for size in (1 << 20, 1 << 16, 1 << 12, 256, 16):
        try:
            while True:
                held.append(bytearray(size))
        except MemoryError:
            pass
    raise ValueError("raised with no memory left")
)"))
    GTEST_SKIP() << "python3 is not installed";
  auto body = expect_reported(invoke("oom"));
  // Raising itself may need memory: the error is then a MemoryError, still reported as one.
  const std::string type = body.value("errorType", "");
  EXPECT_TRUE(type == "ValueError" || type == "MemoryError") << body;
}

TEST_F(ErrorsE2E, PythonRecursionDepth) {
  if (!deploy("deep", "python", R"(
import sys

def down(n):
    return down(n + 1) + 1

def handler(event, context):
    if event.get("lower"):
        sys.setrecursionlimit(12)
        raise ValueError("limit lowered")
    return down(0)
)"))
    GTEST_SKIP() << "python3 is not installed";
  auto body = expect_reported(invoke("deep"));
  EXPECT_EQ(body["errorType"], "RecursionError");
  EXPECT_LT(body["stack"].size(), 20u) << "a deep stack is folded";
  EXPECT_NE(body["stack"].dump().find("Previous line repeated"), std::string::npos) << body;
  auto lowered = expect_reported(invoke("deep", R"({"lower": true})"));
  EXPECT_EQ(lowered["errorType"], "ValueError");
  EXPECT_EQ(expect_reported(invoke("deep"))["errorType"], "RecursionError")
      << "the shim put the recursion limit back";
}

TEST_F(ErrorsE2E, PythonErrorWithAHostileStr) {
  if (!deploy("hostile", "python", R"(
class Nasty(Exception):
    def __str__(self):
        raise RuntimeError("no message for you")

def handler(event, context):
    raise Nasty()
)"))
    GTEST_SKIP() << "python3 is not installed";
  auto body = expect_reported(invoke("hostile"));
  EXPECT_EQ(body["errorType"], "Nasty");
}

TEST_F(ErrorsE2E, NodeOutOfDescriptors) {
  if (!deploy("fds", "node", R"(
const fs = require('fs');
exports.handler = async () => {
  const held = [];
  try { for (;;) held.push(fs.openSync('/dev/null', 'r')); } catch {}
  const count = held.length;
  try { throw new Error(`raised with ${count} descriptors open`); }
  finally { for (const fd of held) fs.closeSync(fd); }
};
)"))
    GTEST_SKIP() << "node is not installed";
  auto body = expect_reported(invoke("fds"));
  EXPECT_EQ(body["errorType"], "Error");
  EXPECT_NE(body["errorMessage"].get<std::string>().find("descriptors open"), std::string::npos);
}

TEST_F(ErrorsE2E, NodeOutOfDescriptorsWhileReporting) {
  // The descriptors stay used up while the shim reports the error.
  if (!deploy("fds", "node", R"(
const fs = require('fs');
const held = [];
exports.handler = async () => {
  try { for (;;) held.push(fs.openSync('/dev/null', 'r')); } catch {}
  setTimeout(() => { for (const fd of held.splice(0)) fs.closeSync(fd); }, 200);
  throw new Error('still out of descriptors');
};
)"))
    GTEST_SKIP() << "node is not installed";
  auto body = expect_reported(invoke("fds"));
  EXPECT_EQ(body["errorMessage"], "still out of descriptors");
}

TEST_F(ErrorsE2E, NodeRecursionDepth) {
  if (!deploy("deep", "node", R"(
function down(n) { return down(n + 1) + 1; }
exports.handler = async () => down(0);
)"))
    GTEST_SKIP() << "node is not installed";
  auto body = expect_reported(invoke("deep"));
  EXPECT_EQ(body["errorType"], "RangeError");
  EXPECT_EQ(body["errorMessage"], "Maximum call stack size exceeded");
}

TEST_F(ErrorsE2E, NodeErrorsHostileToDescribe) {
  if (!deploy("hostile", "node", R"(
exports.handler = async (event) => {
  if (event.kind === 'getters') {
    const e = new Error('x');
    Object.defineProperty(e, 'message', { get() { throw new Error('no message'); } });
    Object.defineProperty(e, 'stack', { get() { throw new Error('no stack'); } });
    Object.defineProperty(e, 'name', { get() { throw new Error('no name'); } });
    throw e;
  }
  if (event.kind === 'tostring') throw { toString() { throw new Error('no string'); } };
  if (event.kind === 'symbol') throw Symbol('s');
  throw null;
};
)"))
    GTEST_SKIP() << "node is not installed";
  for (const char* kind : {"getters", "tostring", "symbol", "null"}) {
    auto body = expect_reported(invoke("hostile", json{{"kind", kind}}.dump()));
    EXPECT_EQ(body["errorType"], "Error") << kind;
  }
}

TEST_F(ErrorsE2E, NodeArrayBufferAllocationFailure) {
  if (!deploy("big", "node", R"(
exports.handler = async () => { const b = new ArrayBuffer(2 ** 40); return b.byteLength; };
)"))
    GTEST_SKIP() << "node is not installed";
  auto body = expect_reported(invoke("big"));
  EXPECT_EQ(body["errorType"], "RangeError");
}

}  // namespace
}  // namespace ember::testing
