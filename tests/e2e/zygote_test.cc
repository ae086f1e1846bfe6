// The python zygote as a function author and an operator meet it: every python worker is a fork
// of ember-python-zygote, sandboxed as a started python3 would be, sharing the zygote's pages;
// each has its own environment, randomness, uid and process tree; a zygote that dies leaves
// python workers to start python3, and `"python_zygote": false` does the same from the start.
// The hostile tests of SandboxE2E run on zygote workers (every python worker is one).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <set>

#include "daemon.h"
#include "eventually.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kView = R"PY(
import os, random, re, signal, sys

def copies_in_memory(masked):
    """How many times the bytes `masked` stands for (each byte xor 1) lie in this process's
    memory, other than in the one object built here to look for them."""
    needle = bytes(b ^ 1 for b in masked.encode())
    own = id(needle) + sys.getsizeof(b"") - 1  # where a bytes object keeps its data
    found = 0
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("r") or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            at = data.find(needle)
            while at >= 0:
                if start + at != own:
                    found += 1
                at = data.find(needle, at + 1)
    return found

def handler(event, context):
    if "find" in event:
        return {"copies": copies_in_memory(event["find"])}
    raised = []
    signal.signal(signal.SIGUSR1, lambda s, f: raised.append(s))
    signal.raise_signal(signal.SIGUSR1)
    return {"pid": os.getpid(), "uid": os.getuid(), "random": random.random(),
            "greeting": os.environ.get("GREETING"), "pooled": os.environ.get("EMBER_POOLED"),
            "executable": sys.executable, "cwd": os.getcwd(), "raised": bool(raised),
            "path": sys.path, "argv": sys.argv,
            "children": len([p for p in os.listdir("/proc") if p.isdigit()])}
)PY";

// A field of /proc/PID/smaps_rollup, in kB; -1 when absent.
long smaps_kb(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(field + ":")) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

std::string comm_of(pid_t pid) {
  std::string comm;
  std::getline(std::ifstream("/proc/" + std::to_string(pid) + "/comm"), comm);
  return comm;
}

std::string exe_of(pid_t pid) {
  std::error_code ec;
  return fs::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec).string();
}

class ZygoteE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "the zygote's children need the sandbox, so root";
    if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "python3 is not installed";
  }
  void TearDown() override {
    if (daemon_.running()) {
      EXPECT_EQ(daemon_.stop(SIGTERM), 0) << daemon_.log();
    }
  }
  // Starts the daemon; the pool is off, so that every worker below is a cold start.
  void start(const json& extra = json::object()) {
    json config = {{"pool", {{"max_per_flavour", 0}}}};
    config.update(extra);
    std::ofstream(config_) << config.dump();
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
  }
  // The live zygote below the daemon, 0 when there is none (a dead one is reaped by the daemon
  // only when it next asks it for a worker).
  pid_t zygote() { return child_named(daemon_.pid(), "ember-zygote"); }
  void deploy(const std::string& name, const json& extra = json::object()) {
    auto r = daemon_.deploy_code(name, "python", kView, extra);
    ASSERT_EQ(r.status, 201) << r.body;
  }
  json invoke(const std::string& name, const json& event = json::object()) {
    auto r =
        http_request(daemon_.port(), "POST", "/v1/functions/" + name + "/invoke", event.dump());
    EXPECT_EQ(r.status, 200) << r.body;
    return r.status == 200 ? r.json() : json();
  }

  TempDir tmp_;
  fs::path config_ = tmp_ / "config.json";
  Daemon daemon_{tmp_ / "state", {"--config", config_.string()}};
};

TEST_F(ZygoteE2E, EveryPythonWorkerIsAForkOfTheZygoteWithItsOwnEnvironmentAndRandomness) {
  start();
  const pid_t z = zygote();
  if (z == 0) GTEST_SKIP() << "no ember-python-zygote (built without libpython3-dev)";
  const std::string zygote_exe = exe_of(z);
  deploy("a", {{"env", {{"GREETING", "hi from a"}}}});
  deploy("b", {{"env", {{"GREETING", "hi from b"}}}});
  std::set<double> randoms;
  for (const char* name : {"a", "b"}) {
    json v = invoke(name);
    EXPECT_EQ(v["greeting"], std::string("hi from ") + name) << v.dump();
    EXPECT_TRUE(v["pooled"].is_null());
    EXPECT_EQ(v["pid"], 1) << "pid 1 of its own pid namespace";
    EXPECT_EQ(v["children"], 1) << "/proc shows only the worker";
    EXPECT_EQ(v["uid"], 1000);
    EXPECT_EQ(v["executable"], "/usr/bin/python3");
    EXPECT_EQ(v["cwd"], "/var/task");
    EXPECT_TRUE(v["raised"]) << "raise() reaches the worker itself (its thread id is its own)";
    EXPECT_EQ(v["argv"], json::array({"/opt/ember/runtime/python/bootstrap.py"}));
    for (const auto& entry : v["path"]) {
      EXPECT_EQ(entry.get<std::string>().find("runtime"), std::string::npos)
          << "no shim folder on the path, as in python3 -I: " << v["path"];
    }
    randoms.insert(v["random"].get<double>());
  }
  EXPECT_EQ(randoms.size(), 2u) << "each fork reseeds `random`";
  const auto workers = worker_pids(daemon_.pid());
  ASSERT_EQ(workers.size(), 2u);
  std::set<std::string> uids;
  for (pid_t pid : workers) {
    EXPECT_EQ(comm_of(pid), "python3");
    EXPECT_EQ(exe_of(pid), zygote_exe) << "a fork of the zygote, not an executed python3";
    // Pages written by the zygote before the fork and not since are shared with it: a python3
    // started for the worker has none (Shared_Dirty 0).
    EXPECT_GE(smaps_kb(pid, "Shared_Dirty"), 1024) << "pid " << pid;
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.starts_with("Uid:")) uids.insert(line.substr(4, line.find('\t', 5) - 4));
    }
  }
  EXPECT_EQ(uids.size(), 2u) << "two functions, two host uids";
}

TEST_F(ZygoteE2E, NoFunctionsEnvironmentReachesAnotherThroughTheZygotesMemory) {
  start();
  if (zygote() == 0) GTEST_SKIP() << "no ember-python-zygote (built without libpython3-dev)";
  // The keeper's spawn request passes through the zygote with its secret far into it (the
  // padding sorts first), past where a later, shorter request would overwrite it.
  const std::string secret = "zygote-leak-check-" + std::to_string(::getpid()) + "-4f1c9a7e";
  deploy("keeper", {{"env", {{"SECRET", secret}, {"AAA_PAD", std::string(3900, 'p')}}}});
  invoke("keeper");
  std::string masked = secret;
  for (char& c : masked) c = static_cast<char>(c ^ 1);
  deploy("seeker");
  json v = invoke("seeker", {{"find", masked}});
  ASSERT_TRUE(v.contains("copies")) << v.dump();
  EXPECT_EQ(v["copies"], 0) << "another function's environment is in this worker's memory";
  // The search finds what is there: the keeper sees its own secret.
  EXPECT_GE(invoke("keeper", {{"find", masked}})["copies"], 1);
}

TEST_F(ZygoteE2E, AZygoteThatDiesLeavesPythonWorkersToStartPython3) {
  start();
  const pid_t z = zygote();
  if (z == 0) GTEST_SKIP() << "no ember-python-zygote (built without libpython3-dev)";
  deploy("before");
  invoke("before");
  ASSERT_EQ(::kill(z, SIGKILL), 0);
  ASSERT_TRUE(eventually([&] { return zygote() == 0; }));
  deploy("after");
  json v = invoke("after");
  EXPECT_EQ(v["pid"], 1);
  EXPECT_EQ(invoke("before")["greeting"], json()) << "the zygote's children live on";
  std::set<std::string> exes;
  for (pid_t pid : worker_pids(daemon_.pid())) exes.insert(fs::path(exe_of(pid)).filename());
  EXPECT_EQ(exes.count("ember-python-zygote"), 1u) << "the worker of `before`";
  EXPECT_EQ(exes.size(), 2u) << "the worker of `after` executed python3";
  EXPECT_NE(daemon_.log().find("the python zygote has ended"), std::string::npos) << daemon_.log();
}

TEST_F(ZygoteE2E, TurnedOffPythonWorkersStartPython3) {
  start({{"python_zygote", false}});
  EXPECT_EQ(zygote(), 0);
  deploy("plain");
  EXPECT_EQ(invoke("plain")["pid"], 1);
  const auto workers = worker_pids(daemon_.pid());
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_TRUE(fs::path(exe_of(workers[0])).filename().string().starts_with("python3"))
      << exe_of(workers[0]);
  EXPECT_EQ(smaps_kb(workers[0], "Shared_Dirty"), 0);
}

}  // namespace
}  // namespace ember::testing
