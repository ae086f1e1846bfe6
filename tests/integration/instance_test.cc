// Instances with real workers in the sandbox: calls queued at a busy instance, when their time
// starts, and what becomes of them when the worker ends first.
#include "ember/worker/instance.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <deque>
#include <functional>

#include "ember/sandbox/sandbox.h"
#include "temp_dir.h"

namespace ember::worker {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using Kind = CallResult::Kind;

sandbox::Sandbox* g_sandbox = nullptr;
std::string g_skip;  // why instances cannot start here, if they cannot

constexpr const char* kHandler = R"(import os, time

def handler(event, context):
    if event.get("exit"):
        os._exit(3)
    time.sleep(event.get("ms", 0) / 1000)
    if event.get("say"):
        print(event["say"])
    return event.get("n")
)";

struct Line {
  std::string request;
  std::string text;
};

class InstanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!g_skip.empty()) GTEST_SKIP() << g_skip;
    if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "/usr/bin/python3 is missing";
    // The worker runs as a function's own uid: the bundle must be readable by anyone.
    ::chmod(dir_.path().c_str(), 0755);
    testing::write_text(dir_ / "main.py", kHandler);
    ::chmod((dir_ / "main.py").c_str(), 0644);
  }

  // Starts a Python instance of main.handler serving `concurrency` calls at once.
  std::shared_ptr<Instance> launch(int concurrency = 1) {
    LaunchSpec spec;
    spec.function = "instance-test";
    spec.concurrency = concurrency;
    const std::string task_root = g_sandbox->task_root(dir_.path().string());
    spec.argv = {"/usr/bin/python3", "-I", "-S", "-u",
                 g_sandbox->runtime_root() + "/python/bootstrap.py"};
    spec.env = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/tmp", "_HANDLER=main.handler",
                "LAMBDA_TASK_ROOT=" + task_root};
    spec.cwd = task_root;
    spec.worker.function = spec.function;
    spec.worker.bundle_dir = dir_.path().string();
    spec.worker.memory_mb = 128;
    spec.worker.tmp_mb = 8;
    auto instance =
        Instance::launch(io_, *g_sandbox, std::move(spec),
                         [this](std::string_view, std::string_view request, std::string text) {
                           lines_.push_back(Line{std::string(request), std::move(text)});
                         });
    EXPECT_TRUE(instance.ok()) << instance.error().message;
    if (!instance.ok()) return nullptr;
    std::optional<Status> ready;
    asio::co_spawn(io_, (*instance)->ready(10s),
                   [&](std::exception_ptr, Status s) { ready = std::move(s); });
    run_until([&] { return ready.has_value(); });
    EXPECT_TRUE(ready && ready->ok()) << (ready && !ready->ok() ? ready->error().message : "");
    return *instance;
  }

  // Starts a call; its result lands in `out`. Instance::call reads its strings when it runs,
  // after this returns, so the test keeps them.
  void call(Instance& instance, const std::string& request, const std::string& event,
            std::chrono::milliseconds timeout, std::optional<CallResult>& out) {
    const std::string& kept_request = kept_.emplace_back(request);
    const std::string& kept_event = kept_.emplace_back(event);
    asio::co_spawn(io_, instance.call(kept_request, kept_event, {}, timeout, 0),
                   [&out](std::exception_ptr, CallResult r) { out = std::move(r); });
  }

  void run_until(const std::function<bool()>& done) {
    const auto limit = std::chrono::steady_clock::now() + 20s;
    while (!done() && std::chrono::steady_clock::now() < limit) io_.run_one_for(50ms);
  }

  // Sends `first` then `second` to a fresh instance of concurrency 1, so that `second` waits
  // at the instance behind `first`, and returns both results.
  std::pair<CallResult, CallResult> two_calls(const std::string& first,
                                              std::chrono::milliseconds first_timeout,
                                              const std::string& second,
                                              std::chrono::milliseconds second_timeout) {
    instance_ = launch();
    if (!instance_) return {};
    std::optional<CallResult> a, b;
    call(*instance_, "req-a", first, first_timeout, a);
    call(*instance_, "req-b", second, second_timeout, b);
    run_until([&] { return a && b; });
    EXPECT_TRUE(a && b) << "no answer within 20 s";
    return {a.value_or(CallResult{}), b.value_or(CallResult{})};
  }

  std::deque<std::string> kept_;  // the strings of calls started by call()
  std::vector<Line> lines_;       // before io_: the sink writes here until the instance is gone
  asio::io_context io_;
  testing::TempDir dir_;
  std::shared_ptr<Instance> instance_;  // the one two_calls started
};

TEST_F(InstanceTest, QueuedCallWaitsForTheOneAheadAndItsTimeoutStartsWithIt) {
  // b's timeout is shorter than its wait behind a.
  auto [a, b] = two_calls(R"({"ms": 300, "n": 1})", 5000ms, R"({"n": 2})", 200ms);
  ASSERT_EQ(a.kind, Kind::kOk) << a.body;
  ASSERT_EQ(b.kind, Kind::kOk) << b.body;
  EXPECT_EQ(a.body, "1");
  EXPECT_EQ(b.body, "2");
  EXPECT_GE(a.duration, 300ms);
  // b waited behind a's 300 ms, which counts as queueing, not as b's own duration.
  EXPECT_GE(b.waited, 290ms);
  EXPECT_LT(b.duration, a.duration);
  EXPECT_TRUE(instance_->usable());
}

TEST_F(InstanceTest, CallQueuedBehindACrashNeverStarted) {
  auto [a, b] = two_calls(R"({"exit": true})", 5000ms, R"({"n": 2})", 5000ms);
  EXPECT_EQ(a.kind, Kind::kCrash) << a.body;
  EXPECT_EQ(b.kind, Kind::kNotStarted) << b.body;
  EXPECT_FALSE(instance_->usable());
}

TEST_F(InstanceTest, ACallToAnInstanceThatHasEndedNeverStarts) {
  auto [a, b] = two_calls(R"({"exit": true})", 5000ms, R"({"n": 2})", 5000ms);
  ASSERT_EQ(a.kind, Kind::kCrash) << a.body;
  std::optional<CallResult> c;
  call(*instance_, "req-c", R"({"n": 3})", 5000ms, c);
  run_until([&] { return c.has_value(); });
  ASSERT_TRUE(c) << "no answer within 20 s";
  // It was never sent, so the scheduler may take it to another instance.
  EXPECT_EQ(c->kind, Kind::kNotStarted) << c->body;
}

TEST_F(InstanceTest, TimeoutKillsTheRunningCallAndLeavesTheQueuedOneNotStarted) {
  auto [a, b] = two_calls(R"({"ms": 20000})", 300ms, R"({"n": 2})", 5000ms);
  EXPECT_EQ(a.kind, Kind::kTimeout) << a.body;
  EXPECT_EQ(b.kind, Kind::kNotStarted) << b.body;
}

TEST_F(InstanceTest, LinesGoToTheirCallOrToNone) {
  auto instance = launch();
  ASSERT_TRUE(instance);
  const std::string alone = R"({"say": "alone"})", first = R"({"say": "first", "ms": 50})",
                    second = R"({"say": "second"})", silent = R"({"n": 0})";
  std::optional<CallResult> r0, a, b, c;
  call(*instance, "req-0", alone, 5000ms, r0);
  run_until([&] { return r0.has_value(); });
  call(*instance, "req-a", first, 5000ms, a);
  call(*instance, "req-b", second, 5000ms, b);
  run_until([&] { return a && b; });
  call(*instance, "req-c", silent, 5000ms, c);
  run_until([&] { return c.has_value(); });
  ASSERT_TRUE(r0 && a && b && c);
  EXPECT_TRUE(r0->printed);
  EXPECT_FALSE(c->printed);
  ASSERT_EQ(lines_.size(), 3u);
  EXPECT_EQ(lines_[0].text, "alone");
  EXPECT_EQ(lines_[0].request, "req-0");
  // With b queued behind a, a line may be either call's: it is given to neither rather than
  // perhaps to the wrong one.
  EXPECT_EQ(lines_[1].text, "first");
  EXPECT_TRUE(lines_[1].request.empty()) << lines_[1].request;
  EXPECT_EQ(lines_[2].text, "second");
  EXPECT_TRUE(lines_[2].request.empty() || lines_[2].request == "req-b") << lines_[2].request;
}

TEST_F(InstanceTest, ConcurrencyStartsCallsAtOnceUpToItsLimit) {
  auto instance = launch(/*concurrency=*/2);
  ASSERT_TRUE(instance);
  // The Python shim serves one call at a time: the second waits in the worker, not here, so
  // the instance counts it as started and times it from its send.
  const std::string slow = R"({"ms": 200, "n": 1})", quick = R"({"n": 2})", third = R"({"n": 3})";
  std::optional<CallResult> a, b, c;
  call(*instance, "req-a", slow, 5000ms, a);
  call(*instance, "req-b", quick, 5000ms, b);
  call(*instance, "req-c", third, 5000ms, c);
  run_until([&] { return a && b && c; });
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(b->kind, Kind::kOk);
  EXPECT_EQ(c->kind, Kind::kOk);
  EXPECT_EQ(b->waited, 0ns);
  EXPECT_GE(b->duration, 190ms);
  EXPECT_GT(c->waited, 0ns);  // third past the limit of 2: queued until a or b answered
}

}  // namespace
}  // namespace ember::worker

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // The spawner helper is forked first, while this process has one thread, as emberd does.
  ember::sandbox::SandboxOptions options;
  options.runtimes_dir = EMBER_RUNTIMES_DIR;
  options.interpreters = {"/usr/bin/python3"};
  options.tag = "instance-test-" + std::to_string(::getpid());
  options.insecure = true;  // without root there is no network namespace; it is not under test
  auto sandbox = ember::sandbox::Sandbox::create(std::move(options));
  if (sandbox.ok()) {
    ember::worker::g_sandbox = sandbox->get();
  } else {
    ember::worker::g_skip = "no sandbox: " + sandbox.error().message;
  }
  return RUN_ALL_TESTS();
}
