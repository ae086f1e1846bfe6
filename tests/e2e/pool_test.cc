// Pre-initialised workers as an operator and a function author meet them: a cold start takes a
// waiting worker, which then is the function's own (its bundle, environment, /tmp size, limits,
// a host uid and network namespace of its own); the pool refills, learns the flavours it is
// asked for, passes over functions it cannot serve, and keeps nothing when it is off. The hostile
// tests of SandboxE2E run on pooled workers too (their /Pooled variants).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <set>

#include "archive_builder.h"
#include "daemon.h"
#include "eventually.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

namespace fs = std::filesystem;

// The CPU weight of `pid`'s cgroup as the kernel holds it: cpu.shares on v1, cpu.weight on v2;
// -1 when it cannot be read.
long cpu_weight_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    const auto first = line.find(':'), second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    const std::string path = line.substr(second + 1);
    fs::path file;
    if (controllers == "cpu,cpuacct" || controllers == "cpu") {
      file = fs::path("/sys/fs/cgroup") / controllers / path.substr(1) / "cpu.shares";
    } else if (controllers.empty() && line.starts_with("0::")) {
      file = fs::path("/sys/fs/cgroup") / path.substr(1) / "cpu.weight";
    } else {
      continue;
    }
    long value = -1;
    if (std::ifstream(file) >> value) return value;
  }
  return -1;
}
using nlohmann::json;

// Tells what the function sees of itself.
constexpr const char* kNodeView = R"(const fs = require('fs');
exports.handler = async (event, context) => {
  const tmp = fs.statfsSync('/tmp');
  return { name: context.functionName, arn: context.invokedFunctionArn, cwd: process.cwd(),
           greeting: process.env.GREETING, pooled: process.env.EMBER_POOLED === undefined ? null : 1,
           file: fs.readFileSync('note.txt', 'utf8'),
           tmp_mb: Math.round(tmp.blocks * tmp.bsize / 1048576) };
};
)";
constexpr const char* kPythonView = R"(import os


def handler(event, context):
    tmp = os.statvfs("/tmp")
    with open("note.txt") as f:
        note = f.read()
    return {"name": context.function_name, "arn": context.invoked_function_arn, "cwd": os.getcwd(),
            "greeting": os.environ.get("GREETING"), "pooled": os.environ.get("EMBER_POOLED"),
            "file": note, "tmp_mb": round(tmp.f_blocks * tmp.f_frsize / 1048576)}
)";

class PoolE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "pre-initialised workers need the sandbox, so root";
    if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "python3 is not installed";
    if (::access("/usr/bin/node", X_OK) != 0) GTEST_SKIP() << "node is not installed";
  }
  void TearDown() override {
    if (daemon_.running()) {
      EXPECT_EQ(daemon_.stop(SIGTERM), 0) << daemon_.log();
    }
  }
  void start(const json& pool) {
    std::ofstream(config_) << json{{"scheduler", {{"eager_instances", 1}}}, {"pool", pool}}.dump();
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
  }
  void deploy(const std::string& name, const std::string& runtime, const json& extra = {}) {
    const bool node = runtime == "node";
    json manifest = {{"runtime", runtime}, {"handler", node ? "index.handler" : "main.handler"}};
    if (extra.is_object()) manifest.update(extra);
    auto r = daemon_.admin("PUT", "/v1/functions/" + name,
                           ArchiveBuilder(ArchiveKind::kZip)
                               .file("function.json", manifest.dump())
                               .file(node ? "index.js" : "main.py", node ? kNodeView : kPythonView)
                               .file("note.txt", "from the bundle of " + name)
                               .build());
    ASSERT_EQ(r.status, 201) << r.body;
  }
  HttpResponse invoke(const std::string& name) {
    return http_request(daemon_.port(), "POST", "/v1/functions/" + name + "/invoke", "{}");
  }
  double metric(const std::string& name) { return daemon_.metric(name); }
  double waiting() { return metric(R"(ember_pool_workers{state="waiting"})"); }
  double hits() { return metric(R"(ember_pool_starts_total{result="hit"})"); }
  double misses() { return metric(R"(ember_pool_starts_total{result="miss"})"); }

  TempDir tmp_;
  fs::path config_ = tmp_ / "config.json";
  Daemon daemon_{tmp_ / "state", {"--config", config_.string()}};
};

TEST_F(PoolE2E, AColdStartTakesAWaitingWorkerThatBecomesTheFunctions) {
  start({{"max_per_flavour", 2}, {"min_per_flavour", 1}});
  ASSERT_TRUE(eventually([&] { return waiting() == 2; })) << "node and python wait from the start";
  deploy("n", "node", {{"env", {{"GREETING", "hi from n"}}}, {"tmp_mb", 16}});
  deploy("p", "python", {{"env", {{"GREETING", "hi from p"}}}, {"tmp_mb", 24}});
  for (const auto& [name, tmp_mb] : {std::pair{"n", 16}, std::pair{"p", 24}}) {
    auto r = invoke(name);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-ember-start"), "cold");
    json v = r.json();
    EXPECT_EQ(v["name"], name) << v.dump();
    EXPECT_EQ(v["arn"], std::string("arn:aws:lambda:us-east-1:000000000000:function:") + name);
    EXPECT_EQ(v["cwd"], "/var/task");
    EXPECT_EQ(v["greeting"], std::string("hi from ") + name);
    EXPECT_TRUE(v["pooled"].is_null()) << "the pool's marker is gone once the function loads";
    EXPECT_EQ(v["file"], std::string("from the bundle of ") + name);
    EXPECT_EQ(v["tmp_mb"], tmp_mb) << "/tmp was resized to the function's tmp_mb";
  }
  EXPECT_EQ(hits(), 2);
  EXPECT_EQ(misses(), 0);
  // Each kept its worker: the second call is warm.
  EXPECT_EQ(invoke("n").header("x-ember-start"), "warm");
  // The pool refills behind the starts.
  EXPECT_TRUE(eventually([&] { return waiting() == 2; }));
}

TEST_F(PoolE2E, AWaitingWorkerYieldsTheCpuUntilItIsBound) {
  start({{"max_per_flavour", 1}, {"min_per_flavour", 1}});
  ASSERT_TRUE(eventually([&] { return waiting() == 2; }));
  // Every worker's weight, lowest first, once the pool has refilled.
  auto weights_now = [&] {
    std::vector<long> weights;
    for (pid_t pid : worker_pids(daemon_.pid())) weights.push_back(cpu_weight_of(pid));
    std::sort(weights.begin(), weights.end());
    return weights;
  };
  auto weights = weights_now();
  ASSERT_EQ(weights.size(), 2u);
  if (weights[0] < 0) GTEST_SKIP() << "no cgroup CPU controller to read here";
  const long lowest = weights[0];
  EXPECT_EQ(weights[1], lowest);
  EXPECT_LT(lowest, 20);
  // A 1024 MB function weighs as much as a default process (100 on v2, 1024 shares on v1).
  deploy("big", "python", {{"memory_mb", 1024}});
  ASSERT_EQ(invoke("big").status, 200);
  EXPECT_EQ(hits(), 1);
  ASSERT_TRUE(eventually([&] { return waiting() == 2; }));
  weights = weights_now();
  ASSERT_EQ(weights.size(), 3u);
  EXPECT_EQ(weights[1], lowest) << "the refilled worker waits at the lowest weight too";
  EXPECT_TRUE(weights[2] == 100 || weights[2] == 1024) << weights[2];
  // A function of the pool's own memory size keeps the waiting worker's limits, but not its
  // weight: 128 MB weighs 12 (v2), 122 shares (v1).
  deploy("small", "python", {{"memory_mb", 128}});
  ASSERT_EQ(invoke("small").status, 200);
  EXPECT_EQ(hits(), 2);
  ASSERT_TRUE(eventually([&] { return waiting() == 2; }));
  weights = weights_now();
  ASSERT_EQ(weights.size(), 4u);
  EXPECT_EQ(weights[1], lowest);
  EXPECT_TRUE(weights[2] == 12 || weights[2] == 122) << weights[2];
}

TEST_F(PoolE2E, EveryPooledWorkerHasItsOwnHostUidAndNetworkNamespace) {
  start({{"max_per_flavour", 2}, {"min_per_flavour", 2}});
  ASSERT_TRUE(eventually([&] { return waiting() == 4; }));
  for (const char* name : {"a", "b"}) deploy(name, "python");
  deploy("c", "node");
  for (const char* name : {"a", "b", "c"}) ASSERT_EQ(invoke(name).status, 200);
  EXPECT_EQ(hits(), 3);
  ASSERT_TRUE(eventually([&] { return waiting() == 4; }));
  // Three functions' workers and four waiting ones: seven processes, no two alike.
  std::set<std::string> uids, networks;
  const auto workers = worker_pids(daemon_.pid());
  for (pid_t pid : workers) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.starts_with("Uid:")) uids.insert(line.substr(4, line.find('\t', 5) - 4));
    }
    networks.insert(fs::read_symlink("/proc/" + std::to_string(pid) + "/ns/net").string());
  }
  EXPECT_EQ(workers.size(), 7u);
  EXPECT_EQ(uids.size(), workers.size());
  EXPECT_EQ(networks.size(), workers.size());
  EXPECT_FALSE(networks.contains(fs::read_symlink("/proc/self/ns/net").string()));
}

TEST_F(PoolE2E, AFlavourAskedForIsKeptAndFunctionsItCannotServeStartCold) {
  start({{"max_per_flavour", 2}, {"min_per_flavour", 1}});
  ASSERT_TRUE(eventually([&] { return waiting() == 2; }));
  // Node's heap limit is set at its start: 256 MB is another flavour, not yet kept.
  deploy("big", "node", {{"memory_mb", 256}});
  ASSERT_EQ(invoke("big").status, 200);
  EXPECT_EQ(misses(), 1);
  ASSERT_TRUE(eventually([&] { return waiting() == 3; })) << "now it is";
  deploy("big2", "node", {{"memory_mb", 256}});
  ASSERT_EQ(invoke("big2").status, 200);
  EXPECT_EQ(hits(), 1);
  // Options Node reads only at its start, and the host's network, need a worker of their own.
  deploy("opts", "node", {{"env", {{"NODE_OPTIONS", "--no-warnings"}}}});
  deploy("host", "node", {{"network", "host"}});
  for (const char* name : {"opts", "host"}) ASSERT_EQ(invoke(name).status, 200) << name;
  EXPECT_EQ(hits(), 1);
  EXPECT_EQ(misses(), 1);
}

TEST_F(PoolE2E, AWaitingWorkerThatDiesIsReplaced) {
  start({{"max_per_flavour", 1}, {"min_per_flavour", 1}});
  ASSERT_TRUE(eventually([&] { return waiting() == 2; }));
  const auto before = worker_pids(daemon_.pid());
  ASSERT_EQ(before.size(), 2u);
  ASSERT_EQ(::kill(before[0], SIGKILL), 0);
  EXPECT_TRUE(eventually([&] {
    auto now = worker_pids(daemon_.pid());
    return waiting() == 2 && now.size() == 2 &&
           std::find(now.begin(), now.end(), before[0]) == now.end();
  })) << "a new one waits in its place";
  deploy("n", "node");
  deploy("p", "python");
  EXPECT_EQ(invoke("n").status, 200);
  EXPECT_EQ(invoke("p").status, 200);
  EXPECT_EQ(hits(), 2);
}

TEST_F(PoolE2E, APoolTurnedOffKeepsNoWorker) {
  start({{"max_per_flavour", 0}});
  deploy("n", "node");
  ASSERT_EQ(invoke("n").status, 200);
  EXPECT_EQ(waiting(), 0);
  EXPECT_EQ(hits(), 0);
  EXPECT_EQ(worker_pids(daemon_.pid()).size(), 1u);
}

}  // namespace
}  // namespace ember::testing
