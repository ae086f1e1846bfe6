// Faults a user meets, end to end against the real emberd: kill -9 of the daemon under load with
// every runtime mid-call (nothing of Ember stays, and the next start cleans up and serves every
// function); a worker stopped by SIGSTOP or too slow (its call times out, the worker is replaced);
// clients that trickle their request byte by byte or never read their answer (they hold no
// worker and starve nobody).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <iterator>
#include <regex>
#include <thread>

#include "archive_builder.h"
#include "daemon.h"
#include "eventually.h"
#include "processes.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

namespace fs = std::filesystem;
namespace asio = boost::asio;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

// Each waits {"ms": N} before it answers.
constexpr const char* kNodeSleeper =
    "exports.handler = async (e) => { await new Promise(r => setTimeout(r, e.ms || 0));"
    " return { pid: process.pid, big: e.big ? 'x'.repeat(e.big) : undefined }; };\n";
constexpr const char* kPythonSleeper = R"(import os, time
def handler(event, context):
    time.sleep(event.get("ms", 0) / 1000)
    return {"pid": os.getpid()}
)";
constexpr const char* kProvidedSleeper = R"(#!/usr/bin/python3 -I
import http.client, json, os, time
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
conn = http.client.HTTPConnection(host, int(port))
base = "/2018-06-01/runtime/invocation/"
while True:
    conn.request("GET", base + "next")
    r = conn.getresponse()
    event = json.loads(r.read())
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    time.sleep(event.get("ms", 0) / 1000)
    conn.request("POST", base + rid + "/response", json.dumps({"pid": os.getpid()}))
    conn.getresponse().read()
)";

bool have(const char* binary) { return ::access(binary, X_OK) == 0; }

std::string bundle_for(const std::string& runtime, json manifest = json::object()) {
  manifest["runtime"] = runtime;
  ArchiveBuilder b(ArchiveKind::kZip);
  if (runtime == "node") {
    manifest["handler"] = "index.handler";
    b.file("index.js", kNodeSleeper);
  } else if (runtime == "python") {
    manifest["handler"] = "main.handler";
    b.file("main.py", kPythonSleeper);
  } else {
    manifest["handler"] = "function.handler";
    b.file("bootstrap", kProvidedSleeper, 0755);
  }
  b.file("function.json", manifest.dump());
  return b.build();
}

HttpResponse invoke(const Daemon& d, const std::string& name, int ms = 0) {
  return http_request(d.port(), "POST", "/v1/functions/" + name + "/invoke",
                      json{{"ms", ms}}.dump());
}

int busy(const Daemon& d, const std::string& name) {
  auto r = d.admin("GET", "/v1/functions/" + name);
  return r.status == 200 ? r.json()["instances"]["busy"].get<int>() : -1;
}

// Several functions of every runtime installed here, each with calls in progress, the pool of
// pre-initialised workers and the python zygote running: kill -9 of emberd. Within a second no
// process that ran below it runs any more and every worker cgroup is empty; the next start on
// the same state directory removes those cgroups and serves every function.
TEST(FaultE2E, KillNineUnderLoadLeavesNoProcessAndTheRestartCleansUpAndServesAll) {
  std::vector<std::string> runtimes;
  if (have("/usr/bin/node")) runtimes.push_back("node");
  if (have("/usr/bin/python3")) runtimes.insert(runtimes.end(), {"python", "provided"});
  if (runtimes.empty()) GTEST_SKIP() << "neither node nor python3 is installed";
  TempDir tmp;
  Daemon daemon(tmp / "state");
  ASSERT_TRUE(daemon.start()) << daemon.log();
  std::vector<std::string> names;
  for (const auto& runtime : runtimes) {
    for (int i = 0; i < 3; ++i) {
      const std::string name = runtime + "-" + std::to_string(i);
      auto r = daemon.admin("PUT", "/v1/functions/" + name,
                            bundle_for(runtime, {{"timeout_ms", 60000}}));
      ASSERT_EQ(r.status, 201) << r.body;
      names.push_back(name);
    }
  }
  for (const auto& name : names) ASSERT_EQ(invoke(daemon, name).status, 200) << name;
  // Two calls in progress per function: one on the warm instance, one on a cold start.
  std::vector<std::future<HttpResponse>> calls;
  for (const auto& name : names) {
    for (int i = 0; i < 2; ++i) {
      calls.push_back(
          std::async(std::launch::async, [&daemon, name] { return invoke(daemon, name, 60000); }));
    }
  }
  for (const auto& name : names) {
    EXPECT_TRUE(eventually([&] { return busy(daemon, name) == 2; }, milliseconds(20000)))
        << name << " never had two calls in progress";
  }
  const auto cgroup_dirs = v1_cgroup_dirs(daemon.log());
  const auto cgroups = worker_cgroups(cgroup_dirs);
  // One worker cgroup per controller: the daemon counts workers.
  const size_t workers = cgroup_dirs.empty() ? 0 : worker_cgroups({cgroup_dirs.front()}).size();
  const auto procs = descendants(daemon.pid());
  // The helper, the zygote, the waiting pool and two workers per function (a provided worker
  // has its bootstrap below it).
  ASSERT_GE(procs.size(), 2 * names.size() + 2);
  const auto killed_at = steady_clock::now();
  ASSERT_EQ(::kill(daemon.pid(), SIGKILL), 0);
  milliseconds took{0};
  for (pid_t pid : survivors(procs, killed_at, milliseconds(1000), took)) {
    ADD_FAILURE() << "pid " << pid << " (" << procs.at(pid).comm << ") outlived emberd by "
                  << took.count() << " ms";
  }
  // Also what started after the snapshot (a pool refill): every worker cgroup empties in time.
  std::vector<std::string> held;
  while (true) {
    held.clear();
    for (const auto& cgroup : cgroups) {
      for (pid_t pid : cgroup_pids(cgroup)) {
        auto info = read_proc(pid);
        if (info && info->state != 'Z') held.push_back(cgroup.string() + ": " + info->comm);
      }
    }
    if (held.empty() || steady_clock::now() - killed_at > milliseconds(1000)) break;
    std::this_thread::sleep_for(milliseconds(5));
  }
  for (const auto& what : held) ADD_FAILURE() << what << " still runs 1 s after the kill";
  std::cout << "[ fault ] kill -9 under load: " << procs.size() << " processes and "
            << cgroups.size() << " worker cgroups; every process gone " << took.count()
            << " ms after\n";
  EXPECT_EQ(daemon.stop(SIGKILL), 128 + SIGKILL);
  for (auto& call : calls) EXPECT_NE(call.get().status, 200);

  ASSERT_TRUE(daemon.start()) << daemon.log();
  if (!cgroup_dirs.empty()) {
    std::smatch m;
    const std::string log = daemon.log();
    ASSERT_TRUE(
        std::regex_search(log, m, std::regex("removed ([0-9]+) worker cgroups left by an earlier")))
        << log;
    EXPECT_GE(std::stoul(m[1]), workers) << log;
  }
  for (const auto& name : names) {
    auto r = invoke(daemon, name);
    EXPECT_EQ(r.status, 200) << name << ": " << r.body;
  }
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
  for (const auto& dir : cgroup_dirs) EXPECT_FALSE(fs::exists(dir)) << dir;
}

// The pid of the one worker of `name` now serving a call, once it has one.
pid_t busy_worker(const Daemon& daemon, const std::string& name) {
  pid_t pid = 0;
  eventually([&] {
    if (busy(daemon, name) != 1) return false;
    // The function's worker is the one in its cgroup (w-NAME-N).
    for (pid_t w : worker_pids(daemon.pid())) {
      std::ifstream cgroup("/proc/" + std::to_string(w) + "/cgroup");
      std::string text((std::istreambuf_iterator<char>(cgroup)), {});
      if (text.find("/w-" + name + "-") != std::string::npos) pid = w;
    }
    return pid != 0;
  });
  return pid;
}

class FaultWorkerE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have("/usr/bin/node")) GTEST_SKIP() << "/usr/bin/node is not installed";
    // The pool off: each worker is then found by its function's cgroup.
    write_text(tmp_ / "config.json", R"({"pool": {"max_per_flavour": 0}})");
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
  }
  void TearDown() override {
    if (daemon_.running()) {
      EXPECT_EQ(daemon_.stop(SIGTERM), 0) << daemon_.log();
    }
  }
  TempDir tmp_;
  Daemon daemon_{tmp_ / "state", {"--config", (tmp_ / "config.json").string()}};
};

// A worker stopped by SIGSTOP in the middle of a call: the call ends at its timeout with the
// timeout error, the stopped worker is killed, and the next call gets a new one.
TEST_F(FaultWorkerE2E, AStoppedWorkerTimesOutIsKilledAndReplaced) {
  ASSERT_EQ(daemon_
                .admin("PUT", "/v1/functions/stopped",
                       bundle_for("node", {{"timeout_ms", 3000}, {"max_instances", 1}}))
                .status,
            201);
  ASSERT_EQ(invoke(daemon_, "stopped").status, 200);
  // Long enough to be found and stopped, well within the timeout if it ran on.
  auto call = std::async(std::launch::async, [&] { return invoke(daemon_, "stopped", 1500); });
  const pid_t worker = busy_worker(daemon_, "stopped");
  ASSERT_NE(worker, 0) << "no worker found in the function's cgroup";
  const auto was = read_proc(worker);
  ASSERT_TRUE(was.has_value());
  ASSERT_EQ(::kill(worker, SIGSTOP), 0);
  auto r = call.get();
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_EQ(r.json()["error"]["code"], "timeout") << r.body;
  EXPECT_TRUE(eventually([&] { return !still_running(worker, *was); }))
      << "the stopped worker was left behind";
  auto next = std::async(std::launch::async, [&] { return invoke(daemon_, "stopped", 300); });
  const pid_t replacement = busy_worker(daemon_, "stopped");
  EXPECT_NE(replacement, 0);
  EXPECT_NE(replacement, worker);
  EXPECT_EQ(next.get().status, 200);
}

// A worker slower than its timeout fails only its own call; another function's calls are
// served meanwhile, and the slow function serves again afterwards.
TEST_F(FaultWorkerE2E, ASlowWorkerFailsOnlyItsOwnCall) {
  ASSERT_EQ(daemon_
                .admin("PUT", "/v1/functions/slow",
                       bundle_for("node", {{"timeout_ms", 1000}, {"max_instances", 1}}))
                .status,
            201);
  ASSERT_EQ(daemon_.admin("PUT", "/v1/functions/quick", bundle_for("node")).status, 201);
  auto slow = std::async(std::launch::async, [&] { return invoke(daemon_, "slow", 5000); });
  ASSERT_TRUE(eventually([&] { return busy(daemon_, "slow") == 1; }));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(invoke(daemon_, "quick").status, 200);
  EXPECT_EQ(slow.get().status, 504);
  EXPECT_EQ(invoke(daemon_, "slow", 10).status, 200);
}

// Twenty clients trickle a request one byte every 50 ms, and one asks for a large answer it
// never reads (the function may run one instance only). Other clients are served as usual, the
// same function serves the next callers (the unread answer holds no worker), and the header
// deadline closes every trickling connection.
TEST(FaultSlowClientE2E, TricklingAndNonReadingClientsHoldNoWorkerAndStarveNobody) {
  if (!have("/usr/bin/node")) GTEST_SKIP() << "/usr/bin/node is not installed";
  TempDir tmp;
  // A write deadline far beyond the test: were the unread answer holding the function's one
  // instance until it passed, the calls below would be throttled.
  write_text(tmp / "config.json",
             R"({"http": {"header_timeout_ms": 1500, "write_timeout_ms": 120000}})");
  Daemon daemon(tmp / "state", {"--config", (tmp / "config.json").string()});
  ASSERT_TRUE(daemon.start()) << daemon.log();
  ASSERT_EQ(
      daemon.admin("PUT", "/v1/functions/big", bundle_for("node", {{"max_instances", 1}})).status,
      201);
  ASSERT_EQ(invoke(daemon, "big").status, 200);

  asio::io_context io;
  const asio::ip::tcp::endpoint at(asio::ip::make_address("127.0.0.1"), daemon.port());
  // The non-reading client: a small receive buffer, a 4 MB answer, nothing read.
  asio::ip::tcp::socket deaf(io);
  deaf.open(asio::ip::tcp::v4());
  deaf.set_option(asio::socket_base::receive_buffer_size(4096));
  deaf.connect(at);
  const std::string event = json{{"big", 4 << 20}}.dump();
  asio::write(deaf, asio::buffer("POST /v1/functions/big/invoke HTTP/1.1\r\nHost: x\r\n"
                                 "Content-Length: " +
                                 std::to_string(event.size()) + "\r\n\r\n" + event));
  // Its call ran (the answer now waits in the socket buffers).
  const std::string served = R"(ember_invocations_total{function="big",outcome="ok"})";
  ASSERT_TRUE(eventually([&] { return daemon.metric(served) == 2; })) << daemon.metric(served);

  std::atomic<int> closed_by_server{0};
  std::vector<std::thread> tricklers;
  for (int i = 0; i < 20; ++i) {
    tricklers.emplace_back([&] {
      asio::io_context own;
      asio::ip::tcp::socket s(own);
      boost::system::error_code ec;
      s.connect(at, ec);
      if (ec) return;
      const std::string request =
          "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(200, 'p') + "\r\n\r\n";
      for (char c : request) {
        asio::write(s, asio::buffer(&c, 1), ec);
        if (ec) break;
        std::this_thread::sleep_for(milliseconds(50));
      }
      if (ec) ++closed_by_server;  // the server gave up on it before the last byte
    });
  }
  // Meanwhile everyone else is served, the function with one instance included.
  for (int i = 0; i < 10; ++i) {
    auto r = invoke(daemon, "big");
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(http_request(daemon.port(), "GET", "/healthz").status, 200);
  }
  for (auto& t : tricklers) t.join();
  // 230 bytes at 50 ms is 11.5 s: every trickler met the 1.5 s header deadline first.
  EXPECT_EQ(closed_by_server.load(), 20);
  deaf.close();
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

// Fills the file system of `dir` with one file, `dir/filler`, until it refuses another byte.
void fill(const fs::path& dir) {
  const int fd = ::open((dir / "filler").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  std::string chunk(1 << 20, 'f');
  for (size_t size = chunk.size(); size > 0; size /= 4) {
    while (::write(fd, chunk.data(), size) == static_cast<ssize_t>(size)) {
    }
  }
  ::close(fd);
}

// The state directory on a small tmpfs of the test's own, which it fills and frees.
class FullDiskE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have("/usr/bin/node")) GTEST_SKIP() << "/usr/bin/node is not installed";
    fs::create_directories(disk_);
    if (::mount("tmpfs", disk_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=48m,mode=0755") != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs here: " << std::strerror(errno);
    }
    mounted_ = true;
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
  }
  void TearDown() override {
    if (daemon_.running()) {
      EXPECT_EQ(daemon_.stop(SIGTERM), 0) << daemon_.log();
    }
    if (mounted_) ::umount2(disk_.c_str(), MNT_DETACH);
  }
  HttpResponse kv_put(const std::string& key, const std::string& value) {
    return daemon_.admin("PUT", "/v1/kv/notes/" + key, value);
  }

  TempDir tmp_;
  fs::path disk_ = tmp_ / "disk";
  bool mounted_ = false;
  Daemon daemon_{disk_ / "state"};
};

// With the state directory's disk full, a deploy, a key-value write and an asynchronous event
// each fail with 507 insufficient_storage and say why, while what was there keeps working:
// the active version serves, stored values read back, calls are answered (their usage records
// wait in memory). Once space returns the same requests succeed, the records of the calls made
// meanwhile are written, and a restart finds everything.
TEST_F(FullDiskE2E, DeploysKvWritesAndEventsFailClearlyAndRecoverWhenSpaceReturns) {
  ASSERT_EQ(daemon_.admin("PUT", "/v1/functions/keep", bundle_for("node")).status, 201);
  ASSERT_EQ(invoke(daemon_, "keep").status, 200);
  ASSERT_EQ(kv_put("before", R"({"v": 1})").status, 200);

  fill(disk_);
  const std::string noise = [] {
    std::string s;
    uint32_t x = 12345;
    for (int i = 0; i < (2 << 20); ++i)
      s.push_back(static_cast<char>((x = x * 1103515245 + 12345) >> 24));
    return s;
  }();
  ArchiveBuilder big(ArchiveKind::kZip);
  big.file("function.json", R"({"runtime": "node", "handler": "index.handler"})")
      .file("index.js", kNodeSleeper)
      .file("noise.bin", noise);
  const std::string big_bundle = big.build();
  const std::string big_value = json{{"blob", std::string(300 << 10, 'v')}}.dump();
  const std::string big_event = json{{"ms", 0}, {"pad", std::string(300 << 10, 'e')}}.dump();

  auto deploy = daemon_.admin("PUT", "/v1/functions/fresh", big_bundle);
  EXPECT_EQ(deploy.status, 507) << deploy.body;
  EXPECT_EQ(deploy.json()["error"]["code"], "insufficient_storage") << deploy.body;
  EXPECT_NE(deploy.body.find("No space left on device"), std::string::npos) << deploy.body;
  auto put = kv_put("big", big_value);
  EXPECT_EQ(put.status, 507) << put.body;
  EXPECT_EQ(put.json()["error"]["code"], "KvUnavailable") << put.body;
  auto event =
      http_request(daemon_.port(), "POST", "/v1/functions/keep/invoke?mode=async", big_event);
  EXPECT_EQ(event.status, 507) << event.body;
  // What was there still works.
  EXPECT_EQ(daemon_.admin("GET", "/v1/functions/fresh").status, 404);
  EXPECT_EQ(daemon_.admin("GET", "/v1/functions/keep").json()["active_version"], 1);
  auto during = invoke(daemon_, "keep");
  EXPECT_EQ(during.status, 200) << during.body;
  const std::string during_id = during.header("x-ember-request-id");
  EXPECT_EQ(daemon_.admin("GET", "/v1/kv/notes/before").json()["value"], json({{"v", 1}}));

  fs::remove(disk_ / "filler");
  deploy = daemon_.admin("PUT", "/v1/functions/fresh", big_bundle);
  EXPECT_EQ(deploy.status, 201) << deploy.body;
  EXPECT_EQ(invoke(daemon_, "fresh").status, 200);
  EXPECT_EQ(kv_put("big", big_value).status, 200);
  event = http_request(daemon_.port(), "POST", "/v1/functions/keep/invoke?mode=async", big_event);
  ASSERT_EQ(event.status, 202) << event.body;
  EXPECT_EQ(daemon_.wait_for_invocation(event.json()["id"], "succeeded")["status"], "succeeded");
  // The call made while the disk was full is billed.
  EXPECT_TRUE(eventually([&] {
    return daemon_.admin("GET", "/v1/functions/keep/usage?limit=100").body.find(during_id) !=
           std::string::npos;
  })) << "the usage record of a call made during the full disk was lost";

  ASSERT_EQ(daemon_.stop(SIGTERM), 0) << daemon_.log();
  ASSERT_TRUE(daemon_.start()) << daemon_.log();
  EXPECT_EQ(daemon_.admin("GET", "/v1/functions/fresh").status, 200);
  EXPECT_EQ(daemon_.admin("GET", "/v1/kv/notes/before").json()["value"], json({{"v", 1}}));
  EXPECT_EQ(daemon_.admin("GET", "/v1/kv/notes/big").json()["value"], json::parse(big_value));
  EXPECT_NE(daemon_.admin("GET", "/v1/functions/keep/usage?limit=100").body.find(during_id),
            std::string::npos);
  EXPECT_EQ(invoke(daemon_, "keep").status, 200);
}

}  // namespace
}  // namespace ember::testing
