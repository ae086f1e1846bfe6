// Hostile functions against the real emberd: each attack ends as the sandbox says, is reported
// as what it was, and the daemon and a well-behaved function keep answering.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "archive_builder.h"
#include "daemon.h"
#include "eventually.h"
#include "http_client.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

// One Python module that carries out the attack named by event["check"].
constexpr const char* kHostile = R"PY(
import ctypes, errno, os, socket, subprocess, time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {'mount': 165, 'umount2': 166, 'unshare': 272, 'setns': 308, 'bpf': 321,
      'keyctl': 250, 'io_uring_setup': 425, 'perf_event_open': 298, 'clone3': 435,
      'ptrace': 101}
ARGS = {'unshare': [0x10000000], 'keyctl': [0, -3], 'io_uring_setup': [1, 0]}

def call(name):
    args = [ctypes.c_long(a) for a in ARGS.get(name, [0, 0, 0, 0, 0])]
    rc = libc.syscall(ctypes.c_long(NR[name]), *args)
    return 'ok' if rc >= 0 else errno.errorcode[ctypes.get_errno()]

def err(e):
    return errno.errorcode.get(e.errno, str(e))

def handler(event, context):
    check = event['check']
    if check == 'syscalls':
        return {n: call(n) for n in NR if n != 'ptrace'}
    if check == 'ptrace':
        return call('ptrace')
    if check == 'fork':
        n = 0
        try:
            while n < 10000:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                n += 1
        except OSError as e:
            return {'forks': n, 'error': err(e)}
        return {'forks': n, 'error': None}
    if check == 'tmp':
        written = 0
        block = b'x' * 65536
        try:
            with open('/tmp/fill', 'wb', buffering=0) as f:
                while True:
                    f.write(block)
                    written += len(block)
        except OSError as e:
            os.unlink('/tmp/fill')
            return {'written_mb': written >> 20, 'error': err(e)}
    if check == 'files':
        fds = []
        try:
            while True:
                fds.append(os.open('/dev/null', os.O_RDONLY))
        except OSError as e:
            for fd in fds:
                os.close(fd)
            return {'opened': len(fds), 'error': err(e)}
    if check == 'view':
        env = open('/proc/1/environ', 'rb').read().decode().split('\0')
        return {'procs': sorted(p for p in os.listdir('/proc') if p.isdigit()),
                'env': sorted(e.split('=')[0] for e in env if e),
                'live_env': sorted(os.environ),
                'task': sorted(os.listdir('/var/task')),
                'uid': os.getuid(),
                'visible': [p for p in event['paths'] if os.path.exists(p)]}
    if check == 'writes':
        out = {}
        for p in ['/probe', '/usr/probe', '/var/task/probe', '/etc/probe', '/tmp/probe']:
            try:
                open(p, 'w').close()
                out[p] = 'ok'
            except OSError as e:
                out[p] = err(e)
        return out
    if check == 'connect':
        out = {}
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(('127.0.0.1', event['port']))
            out['tcp'] = 'ok'
        except OSError as e:
            out['tcp'] = err(e)
        u = socket.socket(socket.AF_UNIX)
        try:
            u.connect(event['socket'])
            out['unix'] = 'ok'
        except OSError as e:
            out['unix'] = err(e)
        return out
    if check == 'kill_all':
        try:
            os.kill(-1, 9)
            return 'ok'
        except OSError as e:
            return err(e)
    if check == 'background':
        subprocess.Popen(['/bin/sleep', '1000'], start_new_session=True)
        return 'started'
    if check == 'exit':
        os._exit(0)
    return 'unknown check'
)PY";

// Live processes whose host uid is in the sandbox's default range.
int sandboxed_processes(const std::string& comm) {
  int n = 0;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream status(e.path() / "status");
    std::string line, this_comm;
    uint64_t uid = 0;
    while (std::getline(status, line)) {
      if (line.starts_with("Name:")) this_comm = line.substr(6);
      if (line.starts_with("Uid:")) uid = std::stoull(line.substr(4));
    }
    if (uid >= 600000000 && uid < 600000000 + 65536 && this_comm == comm) ++n;
  }
  return n;
}

// Every attack runs twice: on workers cold-started for their function (the pool off), and on
// pre-initialised workers the pool bound to it (docs/sandbox.md#pre-initialised-workers), whose
// bundle, /tmp size and limits were given after they started.
class SandboxE2E : public ::testing::TestWithParam<bool> {
 protected:
  bool pooled() const { return GetParam(); }
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "the sandbox needs root";
    if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "python3 is not installed";
    if (::access("/usr/bin/node", X_OK) != 0) GTEST_SKIP() << "node is not installed";
    write_text(tmp_ / "config.json",
               pooled()
                   ? R"({"scheduler": {"stop_grace_ms": 500, "eager_instances": 1},
                             "pool": {"max_per_flavour": 1, "min_per_flavour": 1}})"
                   : R"({"scheduler": {"stop_grace_ms": 500}, "pool": {"max_per_flavour": 0}})");
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
    // Memory enough for a fork bomb to meet the pids limit before the memory limit.
    deploy_python("hostile", {{"timeout_ms", 20000}, {"tmp_mb", 8}, {"memory_mb", 1024}});
    deploy_node("good", "exports.handler = async () => 'fine';\n");
    // The first start of each runtime finds a worker waiting.
    if (pooled()) {
      ASSERT_TRUE(
          eventually([&] { return metric(R"(ember_pool_workers{state="waiting"})") == 2; }));
    }
  }
  double metric(const std::string& name) { return daemon_.metric(name); }
  void TearDown() override {
    if (daemon_.running()) {
      EXPECT_EQ(daemon_.stop(SIGTERM), 0) << daemon_.log();
    }
  }
  void deploy_python(const std::string& name, json config = json::object()) {
    json manifest = {{"runtime", "python"}, {"handler", "hostile.handler"}};
    manifest.update(config);
    auto r = daemon_.admin("PUT", "/v1/functions/" + name,
                           ArchiveBuilder(ArchiveKind::kZip)
                               .file("function.json", manifest.dump())
                               .file("hostile.py", kHostile)
                               .build());
    ASSERT_TRUE(r.status == 200 || r.status == 201) << r.body;
  }
  void deploy_node(const std::string& name, const std::string& code, json config = json::object()) {
    json manifest = {{"runtime", "node"}, {"handler", "index.handler"}};
    manifest.update(config);
    auto r = daemon_.admin("PUT", "/v1/functions/" + name,
                           ArchiveBuilder(ArchiveKind::kZip)
                               .file("function.json", manifest.dump())
                               .file("index.js", code)
                               .build());
    ASSERT_TRUE(r.status == 200 || r.status == 201) << r.body;
  }
  HttpResponse invoke(const std::string& name, const json& event = json::object()) {
    return http_request(daemon_.port(), "POST", "/v1/functions/" + name + "/invoke", event.dump());
  }
  HttpResponse attack(const std::string& check, json extra = json::object()) {
    extra["check"] = check;
    return invoke("hostile", extra);
  }
  // The daemon and a well-behaved function still answer.
  void expect_bystanders_fine() {
    auto r = invoke("good");
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.json(), "fine");
    EXPECT_EQ(daemon_.admin("GET", "/healthz").status, 200);
  }
  json sandbox_counts(const std::string& name) {
    return daemon_.admin("GET", "/v1/functions/" + name).json()["sandbox"];
  }

  TempDir tmp_;
  Daemon daemon_{tmp_ / "state", {"--config", (tmp_ / "config.json").string()}};
};

TEST_P(SandboxE2E, TheHostileFunctionRunsOnAPooledWorkerOnlyInThePooledRun) {
  EXPECT_EQ(attack("view", {{"paths", json::array()}}).status, 200);
  EXPECT_EQ(metric(R"(ember_pool_starts_total{result="hit"})"), pooled() ? 1 : 0);
}

TEST_P(SandboxE2E, StartupLogsWhatIsOn) {
  EXPECT_TRUE(daemon_.wait_for_log("sandbox: namespaces (user, pid, mount, ipc, uts)"))
      << daemon_.log();
  EXPECT_NE(daemon_.log().find("a network namespace per function"), std::string::npos);
  EXPECT_NE(daemon_.log().find("seccomp ("), std::string::npos);
  EXPECT_NE(daemon_.log().find("cgroup v"), std::string::npos);
}

TEST_P(SandboxE2E, ForbiddenCallsFailAsThePolicySays) {
  auto r = attack("syscalls");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json(), json::parse(R"({"mount": "EPERM", "umount2": "EPERM", "unshare": "EPERM",
      "setns": "EPERM", "bpf": "EPERM", "keyctl": "EPERM", "io_uring_setup": "EPERM",
      "perf_event_open": "EPERM", "clone3": "ENOSYS"})"));
  expect_bystanders_fine();
}

TEST_P(SandboxE2E, PtraceKillsTheWorkerAndIsReportedAsASandboxViolation) {
  ASSERT_EQ(attack("view", {{"paths", json::array()}}).status, 200);
  auto r = attack("ptrace");
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_EQ(r.json()["error"]["code"], "sandbox_violation") << r.body;
  EXPECT_NE(r.body.find("SandboxViolation"), std::string::npos);
  EXPECT_EQ(r.header("x-ember-function-error"), "Runtime.SandboxViolation");
  EXPECT_EQ(sandbox_counts("hostile")["sandbox_violations"], 1);
  auto next = attack("view", {{"paths", json::array()}});
  EXPECT_EQ(next.status, 200);
  EXPECT_EQ(next.header("x-ember-start"), "cold") << "a killed worker is never reused";
  expect_bystanders_fine();
}

TEST_P(SandboxE2E, AMemoryHogIsKilledAtItsLimitAndReportedAsOutOfMemory) {
  deploy_node("hog",
              "exports.handler = async () => { const keep = [];"
              " for (;;) keep.push(Buffer.alloc(16 << 20, 1)); };\n",
              {{"memory_mb", 128}, {"timeout_ms", 20000}});
  auto r = invoke("hog");
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_EQ(r.json()["error"]["code"], "out_of_memory") << r.body;
  EXPECT_NE(r.body.find("OutOfMemory"), std::string::npos);
  EXPECT_EQ(r.header("x-ember-function-error"), "Runtime.OutOfMemory");
  EXPECT_EQ(sandbox_counts("hog")["oom_kills"], 1);
  expect_bystanders_fine();
}

TEST_P(SandboxE2E, AForkBombStopsAtThePidsLimit) {
  auto r = attack("fork");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["error"], "EAGAIN") << r.body;
  EXPECT_LT(r.json()["forks"].get<int>(), 256);
  expect_bystanders_fine();
  // The worker's exit ends its forks with it, and the refused forks are counted.
  EXPECT_EQ(attack("exit").status, 502);
  // What may remain is the pool's one waiting python worker.
  EXPECT_TRUE(eventually([&] { return sandboxed_processes("python3") <= (pooled() ? 1 : 0); }));
  EXPECT_GT(sandbox_counts("hostile")["pids_limit_hits"].get<int>(), 0);
}

TEST_P(SandboxE2E, FillingTmpStopsAtItsSize) {
  auto r = attack("tmp");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json(), json::parse(R"({"written_mb": 8, "error": "ENOSPC"})"));
  expect_bystanders_fine();
}

TEST_P(SandboxE2E, OpeningFilesStopsAtTheDescriptorLimit) {
  auto r = attack("files");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["error"], "EMFILE");
  EXPECT_GT(r.json()["opened"].get<int>(), 900);
  EXPECT_LT(r.json()["opened"].get<int>(), 1024);
  expect_bystanders_fine();
}

TEST_P(SandboxE2E, ASpinLoopEndsAtTheTimeout) {
  deploy_node("spin", "exports.handler = async (e) => { if (e.spin) for (;;) {} return 'ok'; };\n",
              {{"timeout_ms", 500}});
  auto r = invoke("spin", {{"spin", true}});
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_EQ(invoke("spin").status, 200);
  expect_bystanders_fine();
}

TEST_P(SandboxE2E, ABackgroundProcessDoesNotSurviveItsInstance) {
  ASSERT_EQ(attack("background").json(), "started");
  EXPECT_EQ(sandboxed_processes("sleep"), 1);
  ASSERT_EQ(daemon_.admin("DELETE", "/v1/functions/hostile").status, 204);
  EXPECT_TRUE(eventually([&] { return sandboxed_processes("sleep") == 0; }));
}

TEST_P(SandboxE2E, TheWorkerSeesOnlyItselfItsBundleAndItsEnvironment) {
  const std::string state = daemon_.state_dir().string();
  auto r = attack("view", {{"paths",
                            {state, state + "/bundles", "/etc/shadow", "/root",
                             tmp_.path().string(), "/var/task/hostile.py"}}});
  ASSERT_EQ(r.status, 200) << r.body;
  json v = r.json();
  EXPECT_EQ(v["procs"], json::array({"1"})) << "/proc shows only the worker";
  // Built from scratch: Ember's variables and those Lambda's runtimes read, nothing else.
  const json function_env = json::parse(R"(["AWS_DEFAULT_REGION", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
      "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_INITIALIZATION_TYPE",
      "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_REGION",
      "EMBER_CONCURRENCY", "EMBER_FUNCTION_NAME", "EMBER_FUNCTION_VERSION", "EMBER_MEMORY_MB",
      "HOME", "LAMBDA_RUNTIME_DIR", "LAMBDA_TASK_ROOT", "LANG", "PATH", "TZ", "_HANDLER"])");
  EXPECT_EQ(v["live_env"], function_env);
  // /proc shows what the process started with. A pre-initialised worker started before it had
  // a function: the base environment, nothing of the function's.
  if (pooled()) {
    const json base = json::parse(R"(["EMBER_POOLED", "HOME", "LAMBDA_RUNTIME_DIR", "LANG",
                                      "PATH", "TZ"])");
    EXPECT_TRUE(v["env"] == base || v["env"] == json::array()) << v["env"];
  } else {
    // A python worker forked from the python zygote shows the zygote's: LANG alone.
    EXPECT_TRUE(v["env"] == function_env || v["env"] == json::array({"LANG"})) << v["env"];
  }
  // The bundle's files, and the bytecode Ember compiles beside them after the deploy
  // (docs/functions.md#python), once that is done.
  EXPECT_TRUE(v["task"] == json::array({"function.json", "hostile.py"}) ||
              v["task"] == json::array({"__pycache__", "function.json", "hostile.py"}))
      << v["task"];
  EXPECT_EQ(v["uid"], 1000);
  EXPECT_EQ(v["visible"], json::array({"/var/task/hostile.py"}))
      << "the state directory, other bundles and host files are out of reach";
}

TEST_P(SandboxE2E, RootUsrAndTaskAreReadOnly) {
  auto r = attack("writes");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json(), json::parse(R"({"/probe": "EROFS", "/usr/probe": "EROFS",
      "/var/task/probe": "EROFS", "/etc/probe": "EROFS", "/tmp/probe": "ok"})"));
}

TEST_P(SandboxE2E, TheDaemonsPortAndSocketAreUnreachable) {
  auto r = attack("connect", {{"port", daemon_.port()}, {"socket", daemon_.socket().string()}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json(), json::parse(R"({"tcp": "ECONNREFUSED", "unix": "ENOENT"})"));
}

TEST_P(SandboxE2E, HostNetworkOptOutIsLoggedAndReachesTheHost) {
  deploy_python("open", {{"network", "host"}});
  auto r = invoke(
      "open",
      {{"check", "connect"}, {"port", daemon_.port()}, {"socket", daemon_.socket().string()}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["tcp"], "ok") << "without its own network the function reaches the daemon";
  EXPECT_TRUE(daemon_.wait_for_log("[fn=open] runs in the HOST network namespace"));
}

TEST_P(SandboxE2E, KillingEveryProcessItCanSeeHarmsNothingOutside) {
  auto r = attack("kill_all");
  EXPECT_TRUE(r.status == 200 || r.status == 502) << r.body;
  expect_bystanders_fine();
  EXPECT_EQ(attack("view", {{"paths", json::array()}}).status, 200);
}

TEST_P(SandboxE2E, CgroupsLeftByAKilledDaemonAreRemovedAtStart) {
  if (pooled()) GTEST_SKIP() << "counts cgroups; the pool's waiting workers would add theirs";
  deploy_node("warm", "exports.handler = async () => 1;\n", {{"min_instances", 2}});
  ASSERT_TRUE(eventually(
      [&] { return daemon_.admin("GET", "/v1/functions/warm").json()["instances"]["idle"] == 2; }));
  daemon_.stop(SIGKILL);
  ASSERT_TRUE(daemon_.start()) << daemon_.log();
  EXPECT_TRUE(daemon_.wait_for_log("removed 2 worker cgroups left by an earlier run"))
      << daemon_.log();
  expect_bystanders_fine();
}

INSTANTIATE_TEST_SUITE_P(Workers, SandboxE2E, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Pooled" : "Cold";
                         });

// Runs emberd as an unprivileged user for at most `seconds`; returns its output and exit code
// (124 when it was still running and `timeout` stopped it).
std::pair<std::string, int> run_unprivileged(const fs::path& state, const std::string& extra,
                                             int seconds) {
  std::string cmd = "timeout -s TERM " + std::to_string(seconds) +
                    " setpriv --reuid=65534 --regid=65534 --clear-groups " EMBER_BINARY
                    " --listen 127.0.0.1:0 --socket '' --state-dir " +
                    state.string() + " " + extra + " 2>&1";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return {"popen failed", -1};
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

TEST(SandboxStartup, WithoutNetworkNamespacesTheDaemonRefusesUnlessInsecure) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch to an unprivileged user";
  if (::access("/usr/bin/setpriv", X_OK) != 0) GTEST_SKIP() << "setpriv is not installed";
  TempDir tmp;
  ASSERT_EQ(::chown(tmp.path().c_str(), 65534, 65534), 0);
  auto [refused, code] = run_unprivileged(tmp / "state", "", 10);
  EXPECT_EQ(code, 1) << refused;
  EXPECT_NE(refused.find("network namespaces are unavailable"), std::string::npos) << refused;
  EXPECT_NE(refused.find("pass --insecure"), std::string::npos) << refused;
  EXPECT_EQ(refused.find("listening on"), std::string::npos);

  auto [started, code2] = run_unprivileged(tmp / "state", "--insecure", 3);
  EXPECT_EQ(code2, 124) << "it ran until stopped: " << started;
  EXPECT_NE(started.find("starting INSECURE"), std::string::npos) << started;
  EXPECT_NE(started.find("listening on"), std::string::npos) << started;
}

}  // namespace
}  // namespace ember::testing
