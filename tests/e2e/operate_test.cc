// Operating the real emberd: sd_notify on a socket the test owns, SIGHUP reloads, /metrics
// checked against a known sequence of calls, usage totals that survive a restart and a kill -9,
// and the START/END/REPORT lines of every call.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "archive_builder.h"
#include "daemon.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::milliseconds;

// A datagram socket standing in for systemd's notification socket.
class NotifySocket {
 public:
  explicit NotifySocket(const fs::path& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    ok_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~NotifySocket() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return ok_; }
  // The next message, or "" after `timeout`.
  std::string next(milliseconds timeout = milliseconds(10'000)) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return "";
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  }
  // Reads messages until one contains `needle`; every message read is appended to `seen`.
  bool until(const std::string& needle, std::vector<std::string>& seen) {
    for (int i = 0; i < 1000; ++i) {
      std::string m = next();
      if (m.empty()) return false;
      seen.push_back(m);
      if (m.find(needle) != std::string::npos) return true;
    }
    return false;
  }

 private:
  fs::path path_;
  int fd_ = -1;
  bool ok_ = false;
};

// Sets environment variables for the daemons started while it lives.
class ScopedEnv {
 public:
  ScopedEnv(std::vector<std::pair<std::string, std::string>> vars) : vars_(std::move(vars)) {
    for (const auto& [k, v] : vars_) ::setenv(k.c_str(), v.c_str(), 1);
  }
  ~ScopedEnv() {
    for (const auto& [k, v] : vars_) ::unsetenv(k.c_str());
  }

 private:
  std::vector<std::pair<std::string, std::string>> vars_;
};

std::string deploy_body(const std::string& code, json config = json::object()) {
  json manifest = {{"runtime", "node"}, {"handler", "index.handler"}};
  manifest.update(config);
  return ArchiveBuilder(ArchiveKind::kZip)
      .file("function.json", manifest.dump())
      .file("index.js", code)
      .build();
}

class OperateE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/usr/bin/node", X_OK) != 0) GTEST_SKIP() << "node is not installed";
  }
  void deploy(Daemon& d, const std::string& name, const std::string& code,
              json config = json::object()) {
    auto r = d.admin("PUT", "/v1/functions/" + name, deploy_body(code, config));
    ASSERT_TRUE(r.status == 200 || r.status == 201) << r.body;
  }
  HttpResponse invoke(const Daemon& d, const std::string& name, const std::string& body = "{}") {
    return http_request(d.port(), "POST", "/v1/functions/" + name + "/invoke", body);
  }
  json usage(const Daemon& d, const std::string& query = "") {
    auto r = d.admin("GET", "/v1/usage" + query);
    EXPECT_EQ(r.status, 200) << r.body;
    return r.json();
  }

  TempDir tmp_;
};

TEST_F(OperateE2E, NotifiesReadyStatusAndStoppingInOrder) {
  NotifySocket sock(tmp_ / "notify.sock");
  ASSERT_TRUE(sock.ok());
  ScopedEnv env({{"NOTIFY_SOCKET", (tmp_ / "notify.sock").string()}});
  Daemon daemon(tmp_ / "state");
  ASSERT_TRUE(daemon.start()) << daemon.log();
  std::vector<std::string> seen;
  ASSERT_TRUE(sock.until("READY=1", seen)) << daemon.log();
  // READY comes once the daemon answers.
  EXPECT_EQ(http_request(daemon.port(), "GET", "/readyz").status, 200);
  ASSERT_TRUE(sock.until("STATUS=", seen));
  EXPECT_NE(seen.back().find("functions"), std::string::npos) << seen.back();
  ::kill(daemon.pid(), SIGTERM);
  ASSERT_TRUE(sock.until("STOPPING=1", seen)) << daemon.log();
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
  // Nothing but STATUS lines between READY and STOPPING, and no watchdog without WATCHDOG_USEC.
  for (const auto& m : seen) EXPECT_EQ(m.find("WATCHDOG=1"), std::string::npos) << m;
}

TEST_F(OperateE2E, SendsWatchdogKeepAlivesWhenAsked) {
  NotifySocket sock(tmp_ / "notify.sock");
  ASSERT_TRUE(sock.ok());
  // 200 ms: keep-alives every 100 ms.
  ScopedEnv env({{"NOTIFY_SOCKET", (tmp_ / "notify.sock").string()}, {"WATCHDOG_USEC", "200000"}});
  Daemon daemon(tmp_ / "state");
  ASSERT_TRUE(daemon.start()) << daemon.log();
  std::vector<std::string> seen;
  ASSERT_TRUE(sock.until("READY=1", seen));
  int keepalives = 0;
  for (int i = 0; i < 50 && keepalives < 3; ++i) {
    std::string m = sock.next(milliseconds(2000));
    ASSERT_FALSE(m.empty()) << "no message for 2 s";
    if (m.find("WATCHDOG=1") != std::string::npos) ++keepalives;
  }
  EXPECT_EQ(keepalives, 3);
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

TEST_F(OperateE2E, SighupReloadsAGoodConfigAndKeepsTheOldOneOnABadOne) {
  const fs::path config = tmp_ / "config.json";
  write_text(config, R"({"log_level": "info", "metering": {"price_per_gb_second": 1}})");
  NotifySocket sock(tmp_ / "notify.sock");
  ASSERT_TRUE(sock.ok());
  ScopedEnv env({{"NOTIFY_SOCKET", (tmp_ / "notify.sock").string()}});
  Daemon daemon(tmp_ / "state", {"--config", config.string()});
  ASSERT_TRUE(daemon.start()) << daemon.log();
  std::vector<std::string> seen;
  ASSERT_TRUE(sock.until("READY=1", seen));
  EXPECT_EQ(usage(daemon)["prices"]["per_gb_second"], 1);

  // Good: the new price applies at once; the listen change waits for a restart.
  write_text(config, R"({"log_level": "debug", "sandbox": {"max_pids": 64},
                         "metering": {"price_per_gb_second": 2}})");
  ::kill(daemon.pid(), SIGHUP);
  ASSERT_TRUE(sock.until("RELOADING=1", seen));
  ASSERT_TRUE(sock.until("READY=1", seen));
  EXPECT_TRUE(daemon.wait_for_log("reload: configuration reloaded")) << daemon.log();
  EXPECT_TRUE(daemon.wait_for_log("sandbox changed; it takes effect at the next restart"));
  EXPECT_EQ(usage(daemon)["prices"]["per_gb_second"], 2);

  // Bad: kept, and said why.
  write_text(config, R"({"log_level": "loud", "metering": {"price_per_gb_second": 3}})");
  ::kill(daemon.pid(), SIGHUP);
  EXPECT_TRUE(daemon.wait_for_log("reload: keeping the current configuration")) << daemon.log();
  EXPECT_TRUE(daemon.wait_for_log("log_level")) << daemon.log();
  EXPECT_EQ(usage(daemon)["prices"]["per_gb_second"], 2);
  EXPECT_EQ(http_request(daemon.port(), "GET", "/healthz").status, 200);
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

TEST_F(OperateE2E, MetricsCountAKnownSequenceOfCalls) {
  const fs::path config = tmp_ / "config.json";
  // Generous margins: a cold start under a sanitizer on a loaded machine takes hundreds of ms.
  write_text(config, R"({"scheduler": {"queue_timeout_ms": 1000, "stop_grace_ms": 200}})");
  Daemon daemon(tmp_ / "state", {"--config", config.string()});
  ASSERT_TRUE(daemon.start()) << daemon.log();
  deploy(daemon, "m",
         "exports.handler = async (e) => {\n"
         "  if (e.fail) throw new Error('asked to');\n"
         "  if (e.sleep) await new Promise(r => setTimeout(r, e.sleep));\n"
         "  return 'ok';\n"
         "};\n",
         {{"timeout_ms", 2500}, {"max_instances", 1}});
  EXPECT_EQ(invoke(daemon, "m").status, 200);                        // ok, cold
  EXPECT_EQ(invoke(daemon, "m").status, 200);                        // ok, warm
  EXPECT_EQ(invoke(daemon, "m", R"({"fail":true})").status, 500);    // error
  EXPECT_EQ(invoke(daemon, "m", R"({"sleep":10000})").status, 504);  // timeout, kills the worker
  // One instance at most: a call holds it for 1.5 s after its cold start (< 1 s), so a second
  // call, queued behind it, gives up after its 1 s queue wait: throttled.
  std::thread slow([&] { EXPECT_EQ(invoke(daemon, "m", R"({"sleep":1500})").status, 200); });
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(invoke(daemon, "m").status, 429);
  slow.join();
  EXPECT_EQ(http_request(daemon.port(), "GET", "/v1/usage").status, 401);

  auto r = http_request(daemon.port(), "GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const std::string& t = r.body;
  EXPECT_EQ(metric_sample(t, R"(ember_invocations_total{function="m",outcome="ok"})"), 3) << t;
  EXPECT_EQ(metric_sample(t, R"(ember_invocations_total{function="m",outcome="error"})"), 1);
  EXPECT_EQ(metric_sample(t, R"(ember_invocations_total{function="m",outcome="timeout"})"), 1);
  EXPECT_EQ(metric_sample(t, R"(ember_invocations_total{function="m",outcome="throttled"})"), 1);
  // The first call and the one after the timeout's kill started instances.
  EXPECT_EQ(metric_sample(t, R"(ember_cold_starts_total{function="m"})"), 2);
  EXPECT_EQ(metric_sample(t, R"(ember_invocation_duration_seconds_count{function="m"})"), 5);
  EXPECT_EQ(metric_sample(t, R"(ember_init_duration_seconds_count{function="m"})"), 2);
  EXPECT_EQ(metric_sample(t, R"(ember_queue_wait_seconds_count{function="m"})"), 5);
  EXPECT_EQ(metric_sample(t, R"(ember_http_requests_total{code="200",route="invoke"})"), 3);
  EXPECT_EQ(metric_sample(t, R"(ember_http_requests_total{code="429",route="invoke"})"), 1);
  EXPECT_EQ(metric_sample(t, R"(ember_http_requests_total{code="401",route="none"})"), 1);
  EXPECT_EQ(metric_sample(t, R"(ember_http_requests_total{code="201",route="deploy"})"), 1);
  EXPECT_EQ(metric_sample(t, R"(ember_instances{function="m",state="idle"})"), 1);
  EXPECT_EQ(metric_sample(t, "ember_spawn_failures_total"), 0);
  EXPECT_GT(metric_sample(t, "process_resident_memory_bytes"), 1 << 20);
  EXPECT_GT(metric_sample(t, "process_open_fds"), 3);
  EXPECT_GE(metric_sample(t, "ember_http_connections"), 1);

  if (::access("/usr/bin/promtool", X_OK) != 0) {
    GTEST_SKIP() << "promtool is not installed (Debian package prometheus): format not checked";
  }
  write_text(tmp_ / "metrics.txt", t);
  const std::string cmd = "/usr/bin/promtool check metrics < " + (tmp_ / "metrics.txt").string() +
                          " > " + (tmp_ / "promtool.txt").string() + " 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << read_text(tmp_ / "promtool.txt");
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

TEST_F(OperateE2E, UsageTotalsAreTheSumOfBilledMillisecondsAndSurviveRestartAndKill) {
  Daemon daemon(tmp_ / "state");
  ASSERT_TRUE(daemon.start()) << daemon.log();
  deploy(daemon, "u",
         "exports.handler = async (e) => { await new Promise(r => setTimeout(r, e.ms)); "
         "return e.ms; };\n",
         {{"memory_mb", 256}});
  int64_t billed = 0;
  std::vector<std::string> ids;
  auto calls = [&](int n) {
    for (int i = 0; i < n; ++i) {
      auto r = invoke(daemon, "u", json{{"ms", i % 4}}.dump());
      ASSERT_EQ(r.status, 200) << r.body;
      billed += std::stoll(r.header("x-ember-billed-ms"));
      ids.push_back(r.header("x-ember-request-id"));
    }
  };
  auto check = [&](const json& u, int64_t invocations) {
    ASSERT_EQ(u["functions"].size(), 1u) << u.dump();
    const json& f = u["functions"][0];
    EXPECT_EQ(f["function"], "u");
    EXPECT_EQ(f["invocations"], invocations);
    EXPECT_EQ(f["billed_ms"], billed);
    EXPECT_DOUBLE_EQ(f["gb_seconds"].get<double>(), billed * 256 / (1000.0 * 1024.0));
    EXPECT_EQ(u["total"]["billed_ms"], billed);
  };
  calls(10);
  check(usage(daemon), 10);

  // The per-call records: newest first, with the request ids the caller saw.
  auto records = daemon.admin("GET", "/v1/functions/u/usage?limit=3");
  ASSERT_EQ(records.status, 200) << records.body;
  ASSERT_EQ(records.json()["records"].size(), 3u);
  EXPECT_EQ(records.json()["records"][0]["request_id"], ids.back());
  EXPECT_EQ(records.json()["records"][0]["memory_mb"], 256);

  // A clean restart.
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
  ASSERT_TRUE(daemon.start()) << daemon.log();
  check(usage(daemon), 10);

  // kill -9 more than a flush interval (1 s) after the calls: nothing is lost.
  calls(5);
  std::this_thread::sleep_for(milliseconds(1500));
  EXPECT_EQ(daemon.stop(SIGKILL), 128 + SIGKILL);
  ASSERT_TRUE(daemon.start()) << daemon.log();
  check(usage(daemon), 15);

  // A time window and bad parameters.
  EXPECT_EQ(usage(daemon, "?to=2000-01-01")["functions"].size(), 0u);
  EXPECT_EQ(usage(daemon, "?from=2000-01-01T00:00:00Z&function=u")["functions"].size(), 1u);
  EXPECT_EQ(daemon.admin("GET", "/v1/usage?from=yesterday").status, 400);
  EXPECT_EQ(daemon.admin("GET", "/v1/usage?bogus=1").status, 400);
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

TEST_F(OperateE2E, EveryCallIsFramedByStartEndAndReportLines) {
  Daemon daemon(tmp_ / "state");
  ASSERT_TRUE(daemon.start()) << daemon.log();
  deploy(daemon, "r", "exports.handler = async () => { console.log('inside'); return 1; };\n");
  auto first = invoke(daemon, "r");
  auto second = invoke(daemon, "r");
  ASSERT_EQ(second.status, 200);
  auto logs = daemon.admin("GET", "/v1/functions/r/logs");
  ASSERT_EQ(logs.status, 200);
  const json all = logs.json();
  std::vector<std::string> lines;
  for (const auto& l : all["lines"]) {
    if (l["request_id"] == second.header("x-ember-request-id")) lines.push_back(l["text"]);
  }
  ASSERT_EQ(lines.size(), 4u) << logs.body << "\nrequest " << second.header("x-ember-request-id");
  const std::string id = second.header("x-ember-request-id");
  EXPECT_EQ(lines[0], "START RequestId: " + id + " Version: 1");
  EXPECT_EQ(lines[1], "inside");
  EXPECT_EQ(lines[2], "END RequestId: " + id);
  EXPECT_EQ(lines[3].rfind("REPORT RequestId: " + id + "\tDuration: ", 0), 0u) << lines[3];
  EXPECT_NE(lines[3].find("\tBilled Duration: " + second.header("x-ember-billed-ms") + " ms"),
            std::string::npos)
      << lines[3];
  EXPECT_NE(lines[3].find("\tMemory Size: 128 MB"), std::string::npos);
  EXPECT_EQ(lines[3].find("Init Duration"), std::string::npos) << "a warm call has no init";
  // The cold call's report carries its init duration.
  bool cold_report = false;
  for (const auto& l : all["lines"]) {
    const std::string text = l["text"];
    if (l["request_id"] == first.header("x-ember-request-id") && text.starts_with("REPORT")) {
      cold_report = text.find("\tInit Duration: ") != std::string::npos;
    }
  }
  EXPECT_TRUE(cold_report);
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

}  // namespace
}  // namespace ember::testing
