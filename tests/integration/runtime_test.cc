// The runtime shims in runtimes/, run as real child processes and driven over fd 3 exactly as
// emberd drives them (docs/worker-protocol.md).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "ember/runtime/bytecode.h"
#include "ember/worker/protocol.h"
#include "temp_dir.h"

namespace ember::worker {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Runtime {
  std::string name;
  std::vector<std::string> argv;
};

const Runtime kNode{"node", {"/usr/bin/node", EMBER_RUNTIMES_DIR "/node/bootstrap.js"}};
const Runtime kPython{"python",
                      {"/usr/bin/python3", "-I", "-S", EMBER_RUNTIMES_DIR "/python/bootstrap.py"}};

// One worker process: fd 3 is our socket, stdout and stderr are pipes.
class Worker {
 public:
  Worker(const Runtime& rt, const fs::path& root, const std::string& handler,
         const std::vector<std::string>& extra_env = {}) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int out[2], err[2];
    EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
    EXPECT_EQ(::pipe2(err, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
    // A clean environment, as the daemon gives workers.
    std::vector<std::string> env = {"PATH=/usr/bin:/bin",
                                    "LANG=C.UTF-8",
                                    "HOME=/tmp",
                                    "_HANDLER=" + handler,
                                    "LAMBDA_TASK_ROOT=" + root.string(),
                                    "EMBER_FUNCTION_NAME=fn",
                                    "EMBER_FUNCTION_VERSION=3",
                                    "EMBER_MEMORY_MB=128"};
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    std::vector<char*> cenv, cargv;
    for (auto& e : env) cenv.push_back(e.data());
    cenv.push_back(nullptr);
    auto argv = rt.argv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    EXPECT_EQ(::posix_spawn(&pid_, cargv[0], &fa, nullptr, cargv.data(), cenv.data()), 0);
    posix_spawn_file_actions_destroy(&fa);
    ::close(sv[1]);
    ::close(out[1]);
    ::close(err[1]);
    fd_ = sv[0];
    out_ = out[0];
    err_ = err[0];
  }
  ~Worker() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait_exit();
    }
    ::close(fd_);
    ::close(out_);
    ::close(err_);
  }

  void send(FrameType type, uint32_t id, const json& meta, const std::string& body = "") {
    std::string wire = encode(Frame{type, id, meta.dump(), body});
    size_t sent = 0;
    while (sent < wire.size()) {
      ssize_t n = ::write(fd_, wire.data() + sent, wire.size() - sent);
      ASSERT_GT(n, 0);
      sent += static_cast<size_t>(n);
    }
  }
  // `extra_meta` adds to the INVOKE's meta (a `qualifier`, say).
  void invoke(uint32_t id, const std::string& event_json, const json& extra_meta = json::object()) {
    json m{{"requestId", "req-" + std::to_string(id)},
           {"deadlineMs", std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                                  .count() +
                              5000},
           {"kind", "invoke"}};
    m.update(extra_meta);
    send(FrameType::kInvoke, id, m, event_json);
  }
  // The next frame, or nullopt after 15 s or at end of stream.
  std::optional<Frame> receive() {
    char buf[65536];
    while (true) {
      auto f = decoder_.next();
      if (!f.ok()) return std::nullopt;
      if (f->has_value()) return std::move(**f);
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 15000) <= 0) return std::nullopt;
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) return std::nullopt;
      decoder_.feed(std::string_view(buf, static_cast<size_t>(n)));
    }
  }
  // What the worker has written to stdout (stderr) so far, without waiting.
  std::string drain_stdout() { return drain(out_); }
  std::string drain_stderr() { return drain(err_); }
  int wait_exit() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  void close_channel() { ::shutdown(fd_, SHUT_WR); }
  int fd() const { return fd_; }

 private:
  static std::string drain(int fd) {
    std::string out;
    char buf[4096];
    pollfd p{fd, POLLIN, 0};
    while (::poll(&p, 1, 0) > 0 && (p.revents & POLLIN)) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  pid_t pid_ = -1;
  int fd_ = -1, out_ = -1, err_ = -1;
  FrameDecoder decoder_;
};

class RuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const auto* bin : {"/usr/bin/node", "/usr/bin/python3"}) {
      if (::access(bin, X_OK) != 0) GTEST_SKIP() << bin << " is not installed (scripts/setup)";
    }
  }
  void file(const std::string& rel, const std::string& text) {
    testing::write_text(dir_ / rel, text);
  }
  static json meta(const Frame& f) { return json::parse(f.meta); }

  testing::TempDir dir_;
};

void expect_ready(Worker& w) {
  auto f = w.receive();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->type, FrameType::kReady) << f->meta;
}

// Sends INVOKE `id` and returns the body of its RESULT; any other answer fails the test.
std::string result_of(Worker& w, uint32_t id, const std::string& event = "{}") {
  w.invoke(id, event);
  auto f = w.receive();
  if (!f.has_value()) {
    ADD_FAILURE() << "no answer to call " << id;
    return {};
  }
  EXPECT_EQ(f->type, FrameType::kResult) << f->meta;
  return f->body;
}

TEST_F(RuntimeTest, NodeAsyncHandlerGetsEventAndContext) {
  file("index.js", R"(exports.handler = async (event, context) => ({
    got: event, id: context.requestId, fn: context.functionName,
    version: context.functionVersion, mem: context.memoryLimitMB,
    left: context.getRemainingTimeInMillis() > 0 });)");
  Worker w(kNode, dir_.path(), "index.handler");
  expect_ready(w);
  w.invoke(1, R"({"name":"ember"})");
  auto f = w.receive();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->type, FrameType::kResult) << f->meta;
  EXPECT_EQ(f->id, 1u);
  auto v = json::parse(f->body);
  EXPECT_EQ(v["got"]["name"], "ember");
  EXPECT_EQ(v["id"], "req-1");
  EXPECT_EQ(v["fn"], "fn");
  EXPECT_EQ(v["version"], "3");
  EXPECT_EQ(v["mem"], 128);
  EXPECT_EQ(v["left"], true);
}

TEST_F(RuntimeTest, NodeTopLevelFunctionDeclarationWorks) {
  file("index.js", "function handler(event) {\n  return ['a', 'b', 'c'];\n}\n// no newline at end");
  Worker w(kNode, dir_.path(), "index.handler");
  expect_ready(w);
  EXPECT_EQ(json::parse(result_of(w, 7, "null")), json::parse(R"(["a","b","c"])"));
}

TEST_F(RuntimeTest, NodeCallbackStyleAndUndefinedResult) {
  file("cb.js",
       "exports.handler = (event, context, callback) => { setTimeout(() => callback(null, event * "
       "2), 5); };\n"
       "exports.nothing = async () => {};\n"
       "exports.fails = (event, context, callback) => callback(new TypeError('bad input'));\n");
  {
    Worker w(kNode, dir_.path(), "cb.handler");
    expect_ready(w);
    w.invoke(1, "21");
    auto f = w.receive();
    ASSERT_EQ(f->type, FrameType::kResult);
    EXPECT_EQ(f->body, "42");
  }
  {
    Worker w(kNode, dir_.path(), "cb.nothing");
    expect_ready(w);
    w.invoke(1, "{}");
    EXPECT_EQ(w.receive()->body, "null");
  }
  {
    Worker w(kNode, dir_.path(), "cb.fails");
    expect_ready(w);
    w.invoke(1, "{}");
    auto f = w.receive();
    ASSERT_EQ(f->type, FrameType::kError);
    EXPECT_EQ(meta(*f)["errorType"], "TypeError");
    EXPECT_EQ(meta(*f)["errorMessage"], "bad input");
  }
}

TEST_F(RuntimeTest, NodeEsmModuleWorks) {
  file("app.mjs", "export const handler = async (event) => ({ esm: true });\n");
  Worker w(kNode, dir_.path(), "app.handler");
  expect_ready(w);
  w.invoke(1, "{}");
  EXPECT_EQ(json::parse(w.receive()->body)["esm"], true);
}

TEST_F(RuntimeTest, NodeServesConcurrentCallsOutOfOrder) {
  file("index.js",
       "exports.handler = (e) => new Promise((r) => setTimeout(() => r(e.n), e.ms));\n");
  Worker w(kNode, dir_.path(), "index.handler", {"EMBER_CONCURRENCY=2"});
  expect_ready(w);
  w.invoke(1, R"({"n":1,"ms":300})");
  w.invoke(2, R"({"n":2,"ms":1})");
  auto first = w.receive();
  auto second = w.receive();
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->id, 2u);
  EXPECT_EQ(first->body, "2");
  EXPECT_EQ(second->id, 1u);
  EXPECT_EQ(second->body, "1");
}

TEST_F(RuntimeTest, NodeAtConcurrencyOneServesQueuedCallsInOrder) {
  // Records how many calls overlap: with concurrency 1 an async handler never runs twice at once.
  file("index.js",
       "let running = 0, most = 0;\n"
       "exports.handler = async (e) => {\n"
       "  most = Math.max(most, ++running);\n"
       "  await new Promise((r) => setTimeout(r, e.ms));\n"
       "  running--;\n"
       "  return { n: e.n, most };\n"
       "};\n");
  Worker w(kNode, dir_.path(), "index.handler", {"EMBER_CONCURRENCY=1"});
  expect_ready(w);
  w.invoke(1, R"({"n":1,"ms":200})");
  w.invoke(2, R"({"n":2,"ms":1})");
  w.invoke(3, R"({"n":3,"ms":1})");
  for (uint32_t id = 1; id <= 3; ++id) {
    auto f = w.receive();
    ASSERT_TRUE(f.has_value());
    ASSERT_EQ(f->type, FrameType::kResult) << f->meta;
    EXPECT_EQ(f->id, id) << "answers come in the order sent";
    EXPECT_EQ(json::parse(f->body)["most"], 1) << "no two calls ran at once";
  }
  w.send(FrameType::kShutdown, 0, json::object());
  EXPECT_EQ(w.wait_exit(), 0);
}

// The Node shim as Lambda's Node.js runtime (aws-lambda-nodejs-runtime-interface-client) behaves:
// how it loads a handler, its handler styles, its context and its error log lines.

// The fields of the one line `text` holds, cut at its tabs; empty unless it is one whole line.
std::vector<std::string> line_fields(const std::string& text) {
  std::vector<std::string> fields;
  if (text.empty() || text.find('\n') != text.size() - 1) return fields;
  for (size_t at = 0;;) {
    const size_t tab = text.find('\t', at);
    if (tab == std::string::npos) {
      fields.push_back(text.substr(at, text.size() - 1 - at));
      return fields;
    }
    fields.push_back(text.substr(at, tab - at));
    at = tab + 1;
  }
}

// Lambda's time stamp: 2024-05-01T12:00:00.123Z, UTC with milliseconds.
void expect_iso_time(const std::string& time) {
  ASSERT_EQ(time.size(), 24u) << time;
  EXPECT_EQ(time[10], 'T') << time;
  EXPECT_EQ(time[19], '.') << time;
  EXPECT_EQ(time.back(), 'Z') << time;
}

TEST_F(RuntimeTest, NodeLoadsEsModulesAndCommonJsAsLambdaDoes) {
  // "type": "module" makes index.js an ES module; its top-level await ends before READY.
  file("package.json", R"({"type": "module"})");
  file("index.js",
       "import { base } from './lib/base.js';\n"
       "const config = await new Promise((r) => setTimeout(() => r(base + 1), 50));\n"
       "export const handler = async (event) => ({ config, n: event.n });\n");
  file("lib/base.js", "export const base = 41;\n");
  // A .cjs file is CommonJS even there, and a top-level declaration is still its export.
  file("legacy.cjs", "function handler(event) { return event.n * 2; }\n");
  // The nearest package.json decides: this folder's has no "type", so its index.js is CommonJS.
  file("old/package.json", "{}");
  file("old/index.js", "exports.handler = async () => typeof module;\n");
  // Lambda's order: FILE.js, then FILE.mjs, then FILE.cjs.
  file("pick.mjs", "export const handler = async () => 'mjs';\n");
  file("pick.cjs", "exports.handler = async () => 'cjs';\n");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"index.handler", R"({"config":42,"n":21})"},
      {"legacy.handler", "42"},
      {"old/index.handler", R"("object")"},
      {"pick.handler", R"("mjs")"}};
  for (const auto& [handler, want] : cases) {
    SCOPED_TRACE(handler);
    Worker w(kNode, dir_.path(), handler);
    expect_ready(w);
    w.invoke(1, R"({"n":21})");
    auto f = w.receive();
    ASSERT_TRUE(f.has_value());
    ASSERT_EQ(f->type, FrameType::kResult) << f->meta;
    EXPECT_EQ(json::parse(f->body), json::parse(want));
  }
}

TEST_F(RuntimeTest, NodeLoadErrorsAreLambdasInitErrors) {
  file("syntax.mjs", "export const handler = async () => {;\n");
  file("unexported.mjs", "function handler() { return 1; }\n");
  file("wrongname.mjs",
       "import { nope } from './lib.mjs';\nexport const handler = async () => nope;\n");
  file("lib.mjs", "export const yes = 1;\n");
  file("nopackage.js", "require('left-pad');\nexports.handler = async () => 1;\n");
  struct Case {
    std::string handler, type, message_start;
  };
  const std::vector<Case> cases = {
      {"syntax.handler", "Runtime.UserCodeSyntaxError", "SyntaxError: "},
      {"unexported.handler", "Runtime.HandlerNotFound",
       "unexported.handler is undefined or not exported"},
      {"wrongname.handler", "Runtime.UserCodeSyntaxError", "SyntaxError: "},
      {"nopackage.handler", "Runtime.ImportModuleError", "Error: Cannot find module 'left-pad'"},
      {"absent.handler", "Runtime.ImportModuleError", "Error: Cannot find module 'absent'"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.handler);
    Worker w(kNode, dir_.path(), c.handler);
    auto f = w.receive();
    ASSERT_TRUE(f.has_value());
    ASSERT_EQ(f->type, FrameType::kInitError) << f->meta;
    auto m = meta(*f);
    EXPECT_EQ(m["errorType"], json(c.type));
    EXPECT_EQ(m["errorMessage"].get<std::string>().rfind(c.message_start, 0), 0u) << f->meta;
    EXPECT_EQ(m["trace"], m["stack"]);
    // Logged before it is sent, as Lambda logs it: no request id, "Uncaught Exception ".
    const std::string log = w.drain_stderr();
    auto fields = line_fields(log);
    ASSERT_EQ(fields.size(), 5u) << log;
    expect_iso_time(fields[0]);
    EXPECT_EQ(fields[1], "undefined");
    EXPECT_EQ(fields[2], "ERROR");
    EXPECT_EQ(fields[3], "Uncaught Exception ");
    EXPECT_EQ(json::parse(fields[4]), (json{{"errorType", m["errorType"]},
                                            {"errorMessage", m["errorMessage"]},
                                            {"stack", m["stack"]}}));
    EXPECT_NE(w.wait_exit(), 0);
  }
}

TEST_F(RuntimeTest, NodeLegacyContextMethodsAndCallbacksAnswerOnce) {
  file("index.js",
       "exports.succeed = (e, context) => { setTimeout(() => context.succeed({ n: e.n }), 5); };\n"
       "exports.done = (e, context) => {\n"
       "  Promise.resolve(e.n).then((n) => context.done(null, n));\n"
       "};\n"
       "exports.detached = (e, context) => { Promise.resolve('p').then(context.succeed); };\n"
       "exports.callbackFirst = async (e, context, callback) => {\n"
       "  callback(null, 'callback');\n"
       "  return 'promise';\n"
       "};\n"
       "exports.promiseFirst = async (e, context, callback) => {\n"
       "  setTimeout(() => callback(null, 'callback'), 20);\n"
       "  return 'promise';\n"
       "};\n"
       "exports.fail = (e, context) => {\n"
       "  context.fail(new RangeError('no'));\n"
       "  context.succeed(1);\n"
       "};\n"
       "exports.failBare = (e, context) => { context.fail(); };\n"
       "exports.doneError = (e, context) => { context.done(new TypeError('bad'), 'ignored'); };\n"
       "exports.noAnswer = (e) => { setTimeout(() => console.log('timer ran'), 50); };\n");
  const std::vector<std::pair<std::string, std::string>> results = {
      {"succeed", R"({"n":7})"},        {"done", "7"},
      {"detached", R"("p")"},           {"callbackFirst", R"("callback")"},
      {"promiseFirst", R"("promise")"}, {"noAnswer", "null"}};
  for (const auto& [name, want] : results) {
    SCOPED_TRACE(name);
    Worker w(kNode, dir_.path(), "index." + name);
    expect_ready(w);
    // Twice: what the first call settles late must not reach the second.
    for (uint32_t id = 1; id <= 2; ++id) {
      w.invoke(id, R"({"n":7})");
      auto f = w.receive();
      ASSERT_TRUE(f.has_value());
      ASSERT_EQ(f->type, FrameType::kResult) << f->meta;
      EXPECT_EQ(f->id, id);
      EXPECT_EQ(f->body, want);
      // A handler that neither returns nor calls back is answered once nothing is left to run.
      if (name == "noAnswer") {
        EXPECT_EQ(w.drain_stdout(), "timer ran\n");
      }
    }
  }
  struct Failure {
    std::string name, type, message;
  };
  const std::vector<Failure> failures = {{"fail", "RangeError", "no"},
                                         {"failBare", "Error", "handled"},
                                         {"doneError", "TypeError", "bad"}};
  for (const Failure& c : failures) {
    SCOPED_TRACE(c.name);
    Worker w(kNode, dir_.path(), "index." + c.name);
    expect_ready(w);
    for (uint32_t id = 1; id <= 2; ++id) {
      w.invoke(id, "{}");
      auto f = w.receive();
      ASSERT_TRUE(f.has_value());
      ASSERT_EQ(f->type, FrameType::kError) << f->meta;
      EXPECT_EQ(f->id, id);
      EXPECT_EQ(meta(*f)["errorType"], json(c.type));
      EXPECT_EQ(meta(*f)["errorMessage"], json(c.message));
    }
  }
}

// The environment of the context tests below, and what both runtimes' contexts say of it: the
// handlers answer {arn, name, version, mem, memoryLimitMB, id, group, stream, ...}.
const std::vector<std::string> kLambdaContextEnv = {
    "AWS_REGION=eu-west-1", "AWS_LAMBDA_FUNCTION_NAME=fn",
    "AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/fn", "AWS_LAMBDA_LOG_STREAM_NAME=[3]fn"};
void expect_lambda_context(const json& v) {
  EXPECT_EQ(v["arn"], "arn:aws:lambda:eu-west-1:000000000000:function:fn");
  EXPECT_EQ(v["name"], "fn");
  EXPECT_EQ(v["version"], "3");
  EXPECT_EQ(v["mem"], "128") << "a string, as Lambda's";
  EXPECT_EQ(v["memoryLimitMB"], 128);
  EXPECT_EQ(v["id"], "req-1");
  EXPECT_EQ(v["group"], "/aws/lambda/fn");
  EXPECT_EQ(v["stream"], "[3]fn");
}

TEST_F(RuntimeTest, NodeContextHasLambdasFields) {
  file("index.js",
       "exports.handler = async (event, context) => ({\n"
       "  arn: context.invokedFunctionArn, name: context.functionName,\n"
       "  version: context.functionVersion, mem: context.memoryLimitInMB,\n"
       "  memoryLimitMB: context.memoryLimitMB, id: context.awsRequestId,\n"
       "  requestId: context.requestId, group: context.logGroupName,\n"
       "  stream: context.logStreamName, identity: typeof context.identity,\n"
       "  clientContext: typeof context.clientContext,\n"
       "  waits: context.callbackWaitsForEmptyEventLoop, kv: typeof context.kv.incr,\n"
       "  left: context.getRemainingTimeInMillis() > 0,\n"
       "  legacy: [typeof context.succeed, typeof context.fail, typeof context.done] });\n");
  Worker w(kNode, dir_.path(), "index.handler", kLambdaContextEnv);
  expect_ready(w);
  w.invoke(1, "{}");
  auto f = w.receive();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->type, FrameType::kResult) << f->meta;
  auto v = json::parse(f->body);
  expect_lambda_context(v);
  EXPECT_EQ(v["requestId"], "req-1");
  EXPECT_EQ(v["identity"], "undefined");
  EXPECT_EQ(v["clientContext"], "undefined");
  EXPECT_EQ(v["waits"], true);
  EXPECT_EQ(v["kv"], "function");
  EXPECT_EQ(v["left"], true);
  EXPECT_EQ(v["legacy"], json::parse(R"(["function","function","function"])"));
  // A call that named a version or an alias has it at the end of its ARN.
  w.invoke(2, "{}", json{{"qualifier", "live"}});
  f = w.receive();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->type, FrameType::kResult) << f->meta;
  EXPECT_EQ(json::parse(f->body)["arn"], "arn:aws:lambda:eu-west-1:000000000000:function:fn:live");
}

TEST_F(RuntimeTest, NodeUnhandledErrorIsLoggedBeforeTheAnswer) {
  file("index.js",
       "exports.handler = async () => {\n"
       "  console.error('before');\n"
       "  throw new RangeError('too far');\n"
       "};\n"
       "exports.callback = (event, context, callback) => callback(new TypeError('bad input'));\n");
  for (const std::string name : {"handler", "callback"}) {
    SCOPED_TRACE(name);
    Worker w(kNode, dir_.path(), "index." + name);
    expect_ready(w);
    w.invoke(4, "{}");
    auto f = w.receive();
    ASSERT_TRUE(f.has_value());
    ASSERT_EQ(f->type, FrameType::kError) << f->meta;
    auto m = meta(*f);
    EXPECT_EQ(m["errorType"], name == "handler" ? "RangeError" : "TypeError");
    EXPECT_TRUE(m["stack"].is_array());
    EXPECT_EQ(m["trace"], m["stack"]) << "Lambda's name for the stack's lines";
    // Lambda's line: time, request id, ERROR, "Invoke Error ", the error with its stack's lines.
    std::string log = w.drain_stderr();
    if (name == "handler") {
      ASSERT_EQ(log.rfind("before\n", 0), 0u) << log;
      log.erase(0, 7);
    }
    auto fields = line_fields(log);
    ASSERT_EQ(fields.size(), 5u) << log;
    expect_iso_time(fields[0]);
    EXPECT_EQ(fields[1], "req-4");
    EXPECT_EQ(fields[2], "ERROR");
    EXPECT_EQ(fields[3], "Invoke Error ");
    EXPECT_EQ(json::parse(fields[4]), (json{{"errorType", m["errorType"]},
                                            {"errorMessage", m["errorMessage"]},
                                            {"stack", m["stack"]}}));
  }
}

class BothRuntimes : public RuntimeTest, public ::testing::WithParamInterface<std::string> {
 protected:
  // Writes the same behaviour in the parameter's language and starts a worker for it.
  std::unique_ptr<Worker> start(const std::string& js, const std::string& py,
                                const std::string& js_handler = "index.handler",
                                const std::string& py_handler = "main.handler") {
    if (GetParam() == "node") {
      file("index.js", js);
      return std::make_unique<Worker>(kNode, dir_.path(), js_handler);
    }
    file("main.py", py);
    return std::make_unique<Worker>(kPython, dir_.path(), py_handler);
  }
};

TEST_P(BothRuntimes, LargeEventAndResultPassIntact) {
  auto w = start("exports.handler = async (e) => e;\n",
                 "def handler(event, context):\n    return event\n");
  expect_ready(*w);
  std::string big(6 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 97) big[i] = static_cast<char>('a' + i % 26);
  std::string event = json(big).dump();
  w->invoke(5, event);
  auto f = w->receive();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->type, FrameType::kResult);
  EXPECT_EQ(f->body, event);
}

TEST_P(BothRuntimes, HandlerErrorIsReported) {
  auto w = start("exports.handler = async () => { throw new RangeError('too far'); };\n",
                 "def handler(event, context):\n    raise ValueError('too far')\n");
  expect_ready(*w);
  w->invoke(2, "{}");
  auto f = w->receive();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->type, FrameType::kError);
  EXPECT_EQ(f->id, 2u);
  auto m = meta(*f);
  EXPECT_EQ(m["errorType"], GetParam() == "node" ? "RangeError" : "ValueError");
  EXPECT_EQ(m["errorMessage"], "too far");
  EXPECT_TRUE(m["stack"].is_array());
  // The worker stays usable after a handler error.
  w->invoke(3, "{}");
  EXPECT_EQ(w->receive()->id, 3u);
}

TEST_P(BothRuntimes, InitErrorCarriesTheMessage) {
  auto w = start("exports.handler = async () => 1;\nthrow new Error('config missing');\n",
                 "raise RuntimeError('config missing')\n");
  auto f = w->receive();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->type, FrameType::kInitError);
  EXPECT_EQ(meta(*f)["errorMessage"], "config missing");
  EXPECT_NE(w->wait_exit(), 0);
}

TEST_P(BothRuntimes, MissingHandlerIsAnInitError) {
  auto w = start("exports.other = async () => 1;\n", "def other(event, context):\n    return 1\n");
  auto f = w->receive();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->type, FrameType::kInitError);
  EXPECT_NE(meta(*f)["errorMessage"].get<std::string>().find("handler"), std::string::npos)
      << f->meta;
}

TEST_P(BothRuntimes, LogLinesArriveBeforeTheAnswer) {
  auto w =
      start("exports.handler = async (e) => { console.log('line for', e.id); return 1; };\n",
            "def handler(event, context):\n    print('line for', event['id'])\n    return 1\n");
  expect_ready(*w);
  w->invoke(1, R"({"id":"first"})");
  ASSERT_EQ(w->receive()->type, FrameType::kResult);
  EXPECT_EQ(w->drain_stdout(), "line for first\n");
}

TEST_P(BothRuntimes, FramesArrivingTogetherAreEachAnswered) {
  auto w = start("exports.handler = async (e) => e.n * 2;\n",
                 "def handler(event, context):\n    return event['n'] * 2\n");
  expect_ready(*w);
  // Three INVOKE frames and one cut in half, so one read holds several frames and a frame's end
  // comes with the next read.
  std::string wire;
  for (uint32_t id = 1; id <= 4; ++id) {
    wire += encode(Frame{FrameType::kInvoke, id, R"({"requestId":"r"})",
                         R"({"n":)" + std::to_string(id) + "}"});
  }
  const size_t cut = wire.size() - 5;
  ASSERT_EQ(::write(w->fd(), wire.data(), cut), static_cast<ssize_t>(cut));
  std::map<uint32_t, std::string> answers;
  for (int i = 0; i < 3; ++i) {
    auto f = w->receive();
    ASSERT_TRUE(f.has_value());
    answers[f->id] = f->body;
  }
  ASSERT_EQ(::write(w->fd(), wire.data() + cut, 5), 5);
  auto last = w->receive();
  ASSERT_TRUE(last.has_value());
  answers[last->id] = last->body;
  EXPECT_EQ(answers, (std::map<uint32_t, std::string>{{1, "2"}, {2, "4"}, {3, "6"}, {4, "8"}}));
}

TEST_P(BothRuntimes, HandlerInASubfolder) {
  file("lib/app/index.js", "exports.run = async () => 'nested';\n");
  file("lib/app/main.py", "def run(event, context):\n    return 'nested'\n");
  auto w = start("", "", "lib/app/index.run", "lib/app/main.run");
  expect_ready(*w);
  w->invoke(1, "{}");
  auto f = w->receive();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->type, FrameType::kResult) << f->meta;
  EXPECT_EQ(f->body, R"("nested")");
}

TEST_P(BothRuntimes, ShutdownAndEndOfChannelExitCleanly) {
  {
    auto w = start("exports.handler = async () => 1;\n", "def handler(e, c):\n    return 1\n");
    expect_ready(*w);
    w->send(FrameType::kShutdown, 0, json::object());
    EXPECT_EQ(w->wait_exit(), 0);
  }
  {
    auto w = start("exports.handler = async () => 1;\n", "def handler(e, c):\n    return 1\n");
    expect_ready(*w);
    w->close_channel();
    EXPECT_EQ(w->wait_exit(), 0);
  }
}

// A pooled worker (docs/worker-protocol.md#pre-initialised-workers) takes its function's
// environment from LOAD while the daemon is still mounting the bundle; only MOUNTED sends it into
// the bundle to load the handler.
class PooledWorker : public BothRuntimes {
 protected:
  std::unique_ptr<Worker> start_pooled() {
    auto w = std::make_unique<Worker>(GetParam() == "node" ? kNode : kPython, dir_.path() / "none",
                                      "none.handler", std::vector<std::string>{"EMBER_POOLED=1"});
    auto f = w->receive();
    EXPECT_TRUE(f.has_value() && f->type == FrameType::kReady && meta(*f)["pooled"] == true);
    return w;
  }
  void load(Worker& w, const fs::path& task) {
    w.send(FrameType::kLoad, 0,
           json{{"env",
                 {{"_HANDLER", GetParam() == "node" ? "index.handler" : "main.handler"},
                  {"LAMBDA_TASK_ROOT", task.string()},
                  {"EMBER_FUNCTION_NAME", "bound"}}}});
  }
};

TEST_P(PooledWorker, EntersItsBundleOnlyWhenToldItIsMounted) {
  auto w = start_pooled();
  const fs::path task = dir_.path() / "task";  // not there until "mounted" below
  load(*w, task);
  // Nothing comes before MOUNTED: a shim that entered the bundle at LOAD would fail its init now.
  pollfd p{w->fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 300), 0) << "the worker answered LOAD before MOUNTED";
  file("task/index.js", "exports.handler = async (e, c) => [process.cwd(), c.functionName];\n");
  file("task/main.py",
       "import os\ndef handler(e, c):\n    return [os.getcwd(), c.function_name]\n");
  w->send(FrameType::kMounted, 0, json::object());
  w->invoke(1, "{}");  // behind MOUNTED, before READY, as the daemon sends the first call
  auto ready = w->receive();
  ASSERT_TRUE(ready.has_value());
  ASSERT_EQ(ready->type, FrameType::kReady) << ready->meta;
  EXPECT_EQ(meta(*ready), json::object());
  auto f = w->receive();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->type, FrameType::kResult) << f->meta;
  EXPECT_EQ(json::parse(f->body), (json{task.string(), "bound"}));
}

// A pooled worker starts in UTC; a function whose environment names another zone gets its local
// time in that zone, though LOAD sets the rest of the base environment only where it differs.
TEST_P(PooledWorker, TakesTheTimeZoneLoadNames) {
  auto w = std::make_unique<Worker>(GetParam() == "node" ? kNode : kPython, dir_.path() / "none",
                                    "none.handler",
                                    std::vector<std::string>{"EMBER_POOLED=1", "TZ=UTC"});
  auto pooled = w->receive();
  ASSERT_TRUE(pooled.has_value() && pooled->type == FrameType::kReady);
  file("task/index.js",
       "exports.handler = async () => -new Date(2026, 0, 1).getTimezoneOffset();\n");
  file("task/main.py",
       "import time\ndef handler(e, c):\n    return time.localtime(1767225600).tm_gmtoff // 60\n");
  w->send(FrameType::kLoad, 0,
          json{{"env",
                {{"_HANDLER", GetParam() == "node" ? "index.handler" : "main.handler"},
                 {"LAMBDA_TASK_ROOT", (dir_.path() / "task").string()},
                 {"TZ", "Asia/Tokyo"}}}});
  w->send(FrameType::kMounted, 0, json::object());
  expect_ready(*w);
  EXPECT_EQ(result_of(*w, 1), "540") << "minutes east of UTC";
}

TEST_P(PooledWorker, ExitsCleanlyWhenStoppedBetweenLoadAndMounted) {
  auto w = start_pooled();
  load(*w, dir_.path() / "task");
  w->send(FrameType::kShutdown, 0, json::object());
  EXPECT_EQ(w->wait_exit(), 0);
}

INSTANTIATE_TEST_SUITE_P(Runtimes, PooledWorker, ::testing::Values("node", "python"),
                         [](const auto& info) { return info.param; });

// What a command writes to its standard output, and its exit code.
std::pair<std::string, int> run_capture(std::vector<std::string> argv) {
  int out[2];
  EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  char* env[] = {nullptr};
  pid_t pid = -1;
  EXPECT_EQ(::posix_spawn(&pid, cargv[0], &fa, nullptr, cargv.data(), env), 0);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  std::string text;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return {text, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)};
}

// The bytecode compiler emberd runs after a deploy (runtimes/python/compile.py), its output
// stored as emberd stores it: the worker then runs each module's stored bytecode, not its source.
TEST_F(RuntimeTest, PythonModulesRunFromTheBytecodeTheCompilerStored) {
  file("main.py",
       "import helper\nfrom pkg import deep\ndef handler(e, c):\n    return helper.V + deep.W\n");
  file("helper.py", "V = 1\n");
  file("pkg/__init__.py", "");
  file("pkg/deep.py", "W = 2\n");
  file("broken.py", "def (:\n");
  auto [out, code] = run_capture({"/usr/bin/python3", "-I", "-S",
                                  EMBER_RUNTIMES_DIR "/python/compile.py", dir_.path().string()});
  ASSERT_EQ(code, 0);
  runtime::BytecodeStream stream;
  stream.feed(out);
  std::vector<std::string> stored;
  while (true) {
    auto m = stream.next();
    ASSERT_TRUE(m.ok()) << m.error().message;
    if (!*m) break;
    ASSERT_TRUE(runtime::store_pyc(dir_.path(), stream.tag(), **m).ok());
    stored.push_back((*m)->source);
  }
  std::sort(stored.begin(), stored.end());
  EXPECT_EQ(stored,
            (std::vector<std::string>{"helper.py", "main.py", "pkg/__init__.py", "pkg/deep.py"}))
      << "every module that compiles; broken.py is left to fail at import as before";
  // The source changes, keeping its size and time, which is all a .pyc is checked against: a
  // worker that ran the source would answer 7 + 2.
  const auto when = fs::last_write_time(dir_.path() / "helper.py");
  file("helper.py", "V = 7\n");
  fs::last_write_time(dir_.path() / "helper.py", when);
  Worker w(kPython, dir_.path(), "main.handler");
  expect_ready(w);
  EXPECT_EQ(result_of(w, 1), "3");
}

// The Python shim as Lambda's Python runtime (awslambdaric) behaves: what it can import, its
// logging set-up, its context and its error log lines.

TEST_F(RuntimeTest, PythonImportsOnlyTheStandardLibraryAndTheBundle) {
  file("helper.py", "VALUE = 7\n");
  file("main.py",
       "import datetime, decimal, json, logging, sys, urllib.request\n"
       "import helper\n"
       "def handler(event, context):\n"
       "    out = {'first': sys.path[0], 'helper': helper.VALUE,\n"
       "           'host': [p for p in sys.path if 'site-packages' in p or 'dist-packages' in p]}\n"
       "    for name in ('yaml', 'six'):\n"
       "        try:\n"
       "            __import__(name)\n"
       "            out[name] = 'imported'\n"
       "        except ModuleNotFoundError:\n"
       "            out[name] = 'missing'\n"
       "    return out\n");
  Worker w(kPython, dir_.path(), "main.handler");
  expect_ready(w);
  w.invoke(1, "{}");
  auto f = w.receive();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->type, FrameType::kResult) << f->meta;
  auto v = json::parse(f->body);
  EXPECT_EQ(v["first"], dir_.path().string()) << "the bundle comes first";
  EXPECT_EQ(v["helper"], 7);
  EXPECT_EQ(v["host"], json::array()) << "no host package folder on sys.path";
  // Installed on most hosts (python3-yaml, python3-six), never a function's.
  EXPECT_EQ(v["yaml"], "missing");
  EXPECT_EQ(v["six"], "missing");
}

TEST_F(RuntimeTest, PythonLoggingWritesLambdasLines) {
  // As on Lambda: the root logger has a handler, so basicConfig() does nothing; its level is INFO
  // until the function or AWS_LAMBDA_LOG_LEVEL sets another.
  file("main.py",
       "import logging\n"
       "logging.basicConfig(level=logging.DEBUG, format='%(message)s')\n"
       "logger = logging.getLogger()\n"
       "logger.warning('loading')\n"
       "def handler(event, context):\n"
       "    logger.debug('debug %s', event['n'])\n"
       "    logger.info('info %s', event['n'])\n"
       "    logging.getLogger('child').warning('warning %s', event['n'])\n"
       "    return 1\n");
  // The log's lines, each cut at its tabs.
  auto lines = [](const std::string& text) {
    std::vector<std::vector<std::string>> out;
    size_t start = 0;
    while (true) {
      const size_t nl = text.find('\n', start);
      if (nl == std::string::npos) break;
      std::vector<std::string> fields;
      for (size_t at = start;;) {
        size_t tab = text.find('\t', at);
        if (tab == std::string::npos || tab > nl) {
          fields.push_back(text.substr(at, nl - at));
          break;
        }
        fields.push_back(text.substr(at, tab - at));
        at = tab + 1;
      }
      out.push_back(std::move(fields));
      start = nl + 1;
    }
    return out;
  };
  {
    Worker w(kPython, dir_.path(), "main.handler");
    expect_ready(w);
    w.invoke(1, R"({"n":1})");
    ASSERT_EQ(w.receive()->type, FrameType::kResult);
    auto log = lines(w.drain_stdout());
    ASSERT_EQ(log.size(), 3u);
    ASSERT_EQ(log[0].size(), 4u);
    EXPECT_EQ(log[0][0], "[WARNING]");
    // 2024-05-01T12:00:00.123Z: UTC, with milliseconds.
    ASSERT_EQ(log[0][1].size(), 24u) << log[0][1];
    EXPECT_EQ(log[0][1][10], 'T');
    EXPECT_EQ(log[0][1][19], '.');
    EXPECT_EQ(log[0][1].back(), 'Z');
    EXPECT_EQ(log[0][2], "") << "no call yet";
    EXPECT_EQ(log[0][3], "loading");
    ASSERT_EQ(log[1].size(), 4u);
    EXPECT_EQ(log[1][0], "[INFO]");
    EXPECT_EQ(log[1][2], "req-1");
    EXPECT_EQ(log[1][3], "info 1");
    ASSERT_EQ(log[2].size(), 4u);
    EXPECT_EQ(log[2][0], "[WARNING]");
    EXPECT_EQ(log[2][2], "req-1");
    EXPECT_EQ(log[2][3], "warning 1");
  }
  {
    Worker w(kPython, dir_.path(), "main.handler", {"AWS_LAMBDA_LOG_LEVEL=DEBUG"});
    expect_ready(w);
    w.invoke(2, R"({"n":2})");
    ASSERT_EQ(w.receive()->type, FrameType::kResult);
    auto log = lines(w.drain_stdout());
    ASSERT_EQ(log.size(), 4u);
    ASSERT_EQ(log[1].size(), 4u);
    ASSERT_EQ(log[2].size(), 4u);
    EXPECT_EQ(log[1][0], "[DEBUG]");
    EXPECT_EQ(log[1][3], "debug 2");
    EXPECT_EQ(log[2][0], "[INFO]");
    EXPECT_EQ(log[2][2], "req-2");
    EXPECT_EQ(log[2][3], "info 2");
  }
}

TEST_F(RuntimeTest, PythonContextHasLambdasAttributes) {
  file("main.py",
       "def handler(event, context):\n"
       "    return {'arn': context.invoked_function_arn, 'name': context.function_name,\n"
       "            'version': context.function_version, 'mem': context.memory_limit_in_mb,\n"
       "            'memoryLimitMB': context.memoryLimitMB, 'id': context.aws_request_id,\n"
       "            'ids': [context.request_id, context.requestId],\n"
       "            'group': context.log_group_name, 'stream': context.log_stream_name,\n"
       "            'client_context': context.client_context,\n"
       "            'cognito': context.identity.cognito_identity_id,\n"
       "            'left': 0 < context.get_remaining_time_in_millis() <= 5000}\n");
  Worker w(kPython, dir_.path(), "main.handler", kLambdaContextEnv);
  expect_ready(w);
  w.invoke(1, "{}");
  auto f = w.receive();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->type, FrameType::kResult) << f->meta;
  auto v = json::parse(f->body);
  expect_lambda_context(v);
  EXPECT_EQ(v["ids"], json::parse(R"(["req-1","req-1"])"));
  EXPECT_TRUE(v["client_context"].is_null());
  EXPECT_TRUE(v["cognito"].is_null());
  EXPECT_EQ(v["left"], true);
  // A call that named a version or an alias has it at the end of its ARN.
  w.send(FrameType::kInvoke, 2,
         json{{"requestId", "req-2"},
              {"deadlineMs", std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                     .count() +
                                 5000},
              {"kind", "invoke"},
              {"qualifier", "live"}},
         "{}");
  f = w.receive();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->type, FrameType::kResult) << f->meta;
  EXPECT_EQ(json::parse(f->body)["arn"], "arn:aws:lambda:eu-west-1:000000000000:function:fn:live");
}

TEST_F(RuntimeTest, PythonUnhandledErrorIsLoggedBeforeTheAnswer) {
  file("main.py",
       "def inner():\n"
       "    raise ValueError('boom')\n"
       "\n"
       "\n"
       "def handler(event, context):\n"
       "    inner()\n");
  Worker w(kPython, dir_.path(), "main.handler");
  expect_ready(w);
  w.invoke(4, "{}");
  auto f = w.receive();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->type, FrameType::kError) << f->meta;
  EXPECT_EQ(meta(*f)["errorType"], "ValueError");
  // Lambda's lines: the stack's indentation is made of no-break spaces (U+00A0).
  const std::string nbsp = "\xc2\xa0";
  const std::string path = (dir_.path() / "main.py").string();
  EXPECT_EQ(w.drain_stdout(),
            "[ERROR] ValueError: boom\n"
            "Traceback (most recent call last):\n" +
                nbsp + nbsp + "File \"" + path + "\", line 6, in handler\n" + nbsp + nbsp + nbsp +
                nbsp + "inner()\n" + nbsp + nbsp + "File \"" + path + "\", line 2, in inner\n" +
                nbsp + nbsp + nbsp + nbsp + "raise ValueError('boom')\n");
}

TEST_F(RuntimeTest, PythonImportErrorIsLambdasInitError) {
  file("main.py", "import yaml\n\ndef handler(event, context):\n    return 1\n");
  Worker w(kPython, dir_.path(), "main.handler");
  auto f = w.receive();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->type, FrameType::kInitError) << f->meta;
  EXPECT_EQ(meta(*f)["errorType"], "Runtime.ImportModuleError");
  EXPECT_EQ(meta(*f)["errorMessage"], "Unable to import module 'main': No module named 'yaml'");
  EXPECT_EQ(w.drain_stdout(),
            "[ERROR] Runtime.ImportModuleError: Unable to import module 'main': No module named "
            "'yaml'\nTraceback (most recent call last):\n");
  EXPECT_NE(w.wait_exit(), 0);
}

INSTANTIATE_TEST_SUITE_P(Runtimes, BothRuntimes, ::testing::Values("node", "python"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace ember::worker
