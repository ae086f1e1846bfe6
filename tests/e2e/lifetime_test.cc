// No Ember process outlives emberd: after kill -9 of the daemon, its spawner helper, every worker
// and everything a worker started are gone within a second, whatever the worker was doing; after
// kill -9 of the helper, the workers are gone within a second and the daemon exits with an error.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <map>
#include <thread>

#include "archive_builder.h"
#include "daemon.h"
#include "eventually.h"
#include "processes.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr auto kDeadline = milliseconds(1000);

const char* kNode = R"(const { spawn } = require('child_process');
exports.handler = async (e) => {
  if (e.mode === 'cpu') for (;;) {}
  if (e.mode === 'syscall') Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  if (e.mode === 'children') {
    for (let i = 0; i < 2; i++) spawn('/bin/sleep', ['300'], { stdio: 'ignore' });
    await new Promise(() => {});
  }
  return 'idle';
};
)";

const char* kPython = R"(import subprocess
import time

def handler(event, context):
    mode = event.get("mode")
    if mode == "cpu":
        while True:
            pass
    if mode == "syscall":
        time.sleep(300)
    if mode == "children":
        for _ in range(2):
            subprocess.Popen(["/bin/sleep", "300"])
        time.sleep(300)
    return "idle"
)";

struct Case {
  std::string runtime;
  std::string mode;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.runtime << " " << c.mode; }

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return info.param.runtime + "_" + info.param.mode;
}

class LifetimeE2E : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const std::string& runtime = GetParam().runtime;
    const char* binary = runtime == "node" ? "/usr/bin/node" : "/usr/bin/python3";
    if (::access(binary, X_OK) != 0) GTEST_SKIP() << binary << " is not installed";
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
    json manifest = {{"runtime", runtime}, {"timeout_ms", 120000}};
    ArchiveBuilder b(ArchiveKind::kZip);
    if (runtime == "node") {
      manifest["handler"] = "index.handler";
      b.file("index.js", kNode);
    } else {
      manifest["handler"] = "main.handler";
      b.file("main.py", kPython);
    }
    b.file("function.json", manifest.dump());
    auto r = daemon_.admin("PUT", "/v1/functions/f", b.build());
    ASSERT_EQ(r.status, 201) << r.body;
    auto idle = invoke("idle");
    ASSERT_EQ(idle.status, 200) << idle.body;
  }

  void TearDown() override {
    if (call_.valid()) call_.wait();
  }

  HttpResponse invoke(const std::string& mode) {
    return http_request(daemon_.port(), "POST", "/v1/functions/f/invoke",
                        json{{"mode", mode}}.dump());
  }

  // Puts the worker in the case's state; returns the processes to watch (helper included).
  std::map<pid_t, ProcInfo> enter_state() {
    const std::string mode = GetParam().mode;
    size_t expected = 2;  // the helper and the worker
    if (mode != "idle") {
      call_ = std::async(std::launch::async, [this, mode] { return invoke(mode); });
      EXPECT_TRUE(eventually([&] {
        return daemon_.admin("GET", "/v1/functions/f").json()["instances"]["busy"] == 1;
      })) << "the call never reached the worker";
      if (mode == "children") expected += 2;
    }
    std::map<pid_t, ProcInfo> procs;
    EXPECT_TRUE(eventually([&] {
      procs = descendants(daemon_.pid());
      return procs.size() >= expected;
    })) << "expected "
        << expected << " processes below the daemon, saw " << procs.size();
    // Let a busy worker get into its loop or system call.
    std::this_thread::sleep_for(milliseconds(100));
    return descendants(daemon_.pid());
  }

  TempDir tmp_;
  Daemon daemon_{tmp_ / "state"};
  std::future<HttpResponse> call_;
};

TEST_P(LifetimeE2E, KillNineOfTheDaemonEndsEveryProcessWithinASecond) {
  const auto procs = enter_state();
  ASSERT_FALSE(procs.empty());
  const auto killed_at = steady_clock::now();
  daemon_.stop(SIGKILL);
  milliseconds took{0};
  const auto left = survivors(procs, killed_at, kDeadline, took);
  for (pid_t pid : left) {
    ADD_FAILURE() << "pid " << pid << " (" << procs.at(pid).comm << ") outlived the daemon by "
                  << took.count() << " ms";
  }
  std::cout << "[ lifetime ] " << GetParam().runtime << " " << GetParam().mode << ": "
            << procs.size() << " processes gone " << took.count() << " ms after kill -9\n";
  // Nothing is left for the next start to sweep but empty cgroups.
  for (const auto& [pid, info] : procs) ::kill(pid, SIGKILL);
}

TEST_P(LifetimeE2E, KillNineOfTheHelperEndsEveryWorkerAndTheDaemonExitsWithAnError) {
  auto procs = enter_state();
  pid_t helper = 0;
  for (const auto& [pid, info] : procs) {
    if (info.comm == "ember-spawner" && info.ppid == daemon_.pid()) helper = pid;
  }
  ASSERT_NE(helper, 0) << "no ember-spawner below the daemon";
  const auto killed_at = steady_clock::now();
  ASSERT_EQ(::kill(helper, SIGKILL), 0);
  milliseconds took{0};
  const auto left = survivors(procs, killed_at, kDeadline, took);
  for (pid_t pid : left) {
    ADD_FAILURE() << "pid " << pid << " (" << procs.at(pid).comm << ") outlived the helper by "
                  << took.count() << " ms";
  }
  EXPECT_EQ(daemon_.wait_exit(10'000), 1) << daemon_.log();
  EXPECT_NE(daemon_.log().find("the spawner helper exited"), std::string::npos) << daemon_.log();
  for (const auto& [pid, info] : procs) ::kill(pid, SIGKILL);
}

// The first line of defence, seen from inside: the worker's parent-death signal is SIGKILL when
// its handler runs (armed after the sandbox's last credential change), and function code cannot
// clear it.
TEST(LifetimeSandboxE2E, TheDeathSignalIsArmedInTheHandlerAndCannotBeCleared) {
  if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "python3 is not installed";
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for the sandbox's identity switch";
  TempDir tmp;
  Daemon daemon(tmp / "state");
  ASSERT_TRUE(daemon.start()) << daemon.log();
  ArchiveBuilder b(ArchiveKind::kZip);
  b.file("function.json", R"({"runtime":"python","handler":"main.handler"})");
  b.file("main.py", R"(import ctypes

def handler(event, context):
    libc = ctypes.CDLL(None, use_errno=True)
    signal = ctypes.c_int(-1)
    libc.prctl(2, ctypes.byref(signal), 0, 0, 0)  # PR_GET_PDEATHSIG
    cleared = libc.prctl(1, 0, 0, 0, 0)            # PR_SET_PDEATHSIG
    errno = ctypes.get_errno()
    after = ctypes.c_int(-1)
    libc.prctl(2, ctypes.byref(after), 0, 0, 0)
    return {"signal": signal.value, "clear": cleared, "errno": errno, "after": after.value}
)");
  ASSERT_EQ(daemon.admin("PUT", "/v1/functions/sig", b.build()).status, 201);
  auto r = http_request(daemon.port(), "POST", "/v1/functions/sig/invoke", "{}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json(), json::parse(R"({"signal": 9, "clear": -1, "errno": 1, "after": 9})"));
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

INSTANTIATE_TEST_SUITE_P(Workers, LifetimeE2E,
                         ::testing::Values(Case{"node", "idle"}, Case{"node", "cpu"},
                                           Case{"node", "syscall"}, Case{"node", "children"},
                                           Case{"python", "idle"}, Case{"python", "cpu"},
                                           Case{"python", "syscall"}, Case{"python", "children"}),
                         case_name);

}  // namespace
}  // namespace ember::testing
