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

#include <map>
#include <nlohmann/json.hpp>

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
                      {"/usr/bin/python3", "-I", EMBER_RUNTIMES_DIR "/python/bootstrap.py"}};

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
  void invoke(uint32_t id, const std::string& event_json) {
    send(FrameType::kInvoke, id,
         json{{"requestId", "req-" + std::to_string(id)},
              {"deadlineMs", std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                     .count() +
                                 5000},
              {"kind", "invoke"}},
         event_json);
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
  // What the worker has written to stdout so far, without waiting.
  std::string drain_stdout() {
    std::string out;
    char buf[4096];
    pollfd p{out_, POLLIN, 0};
    while (::poll(&p, 1, 0) > 0 && (p.revents & POLLIN)) {
      ssize_t n = ::read(out_, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
  int wait_exit() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  void close_channel() { ::shutdown(fd_, SHUT_WR); }
  int fd() const { return fd_; }

 private:
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
  w.invoke(7, "null");
  auto f = w.receive();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->type, FrameType::kResult) << f->meta;
  EXPECT_EQ(json::parse(f->body), json::parse(R"(["a","b","c"])"));
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

INSTANTIATE_TEST_SUITE_P(Runtimes, BothRuntimes, ::testing::Values("node", "python"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace ember::worker
