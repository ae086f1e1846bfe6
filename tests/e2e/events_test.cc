// Asynchronous invocation as a user meets it: 202 with an id once the event is stored, its
// status and result at /v1/invocations/{id}, retries and dead letters, redrive, Lambda's Event
// type, and a kill -9 of the daemon in the middle of a burst that loses no accepted event.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <fstream>
#include <future>
#include <map>
#include <set>
#include <thread>

#include "daemon.h"
#include "eventually.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

using nlohmann::json;

// Records each event it gets in the key-value store (seen/<n>), then fails when asked to.
constexpr const char* kHandler = R"(exports.handler = async (event, context) => {
  if (event.n !== undefined) await context.kv.put('seen/' + event.n, context.awsRequestId);
  if (event.fail) throw new Error('failing as asked: ' + event.fail);
  return { got: event };
};
)";

class EventsE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(config_) << R"({"events": {"retry_base_ms": 100, "retry_max_ms": 400}})";
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
  }
  void TearDown() override {
    if (daemon_.running()) {
      EXPECT_EQ(daemon_.stop(SIGTERM), 0) << daemon_.log();
    }
  }
  void deploy(const std::string& name, const json& extra = json::object(),
              const std::string& code = kHandler) {
    auto r = daemon_.deploy_code(name, "node", code, extra);
    ASSERT_TRUE(r.status == 200 || r.status == 201) << r.body;
  }
  HttpResponse send(const std::string& name, const json& event) {
    return http_request(daemon_.port(), "POST", "/v1/functions/" + name + "/invoke?mode=async",
                        event.dump());
  }
  json wait_for(const std::string& id, const std::string& status) {
    return daemon_.wait_for_invocation(id, status);
  }

  TempDir tmp_;
  std::filesystem::path config_ = tmp_.path() / "ember.json";
  Daemon daemon_{tmp_.path() / "state", {"--config", config_.string()}};
};

TEST_F(EventsE2E, AnAsyncCallIsAcceptedThenRunsAndKeepsItsResult) {
  deploy("f");
  auto sent = send("f", {{"hello", "world"}});
  ASSERT_EQ(sent.status, 202) << sent.body;
  const std::string id = sent.json()["id"];
  EXPECT_EQ(sent.json()["status"], "queued");
  EXPECT_EQ(sent.header("location"), "/v1/invocations/" + id);
  json done = wait_for(id, "succeeded");
  EXPECT_EQ(done["status"], "succeeded") << done.dump();
  EXPECT_EQ(done["attempts"], 1);
  EXPECT_EQ(done["result"]["got"]["hello"], "world");
  EXPECT_EQ(done["function"], "f");
  EXPECT_EQ(daemon_.admin("GET", "/v1/invocations/nope").status, 404);
  // The invocation was metered like any call.
  auto usage = daemon_.admin("GET", "/v1/usage?function=f").json();
  EXPECT_EQ(usage["functions"][0]["invocations"], 1) << usage.dump();
}

TEST_F(EventsE2E, AFailingEventIsRetriedThenADeadLetterThatCanBeRedriven) {
  deploy("f", {{"async", {{"retries", 1}}}});
  auto sent = send("f", {{"fail", "always"}});
  ASSERT_EQ(sent.status, 202) << sent.body;
  const std::string id = sent.json()["id"];
  json dead = wait_for(id, "dead");
  ASSERT_EQ(dead["status"], "dead") << dead.dump();
  EXPECT_EQ(dead["attempts"], 2) << "one attempt and one retry";
  EXPECT_EQ(dead["error"]["errorMessage"], "failing as asked: always");
  auto logs = daemon_.admin("GET", "/v1/functions/f/logs?since=0").body;
  EXPECT_NE(logs.find("Invoke Error"), std::string::npos) << "each attempt is in the log";

  auto letters = daemon_.admin("GET", "/v1/functions/f/dead-letters");
  ASSERT_EQ(letters.status, 200) << letters.body;
  ASSERT_EQ(letters.json()["dead_letters"].size(), 1u);
  EXPECT_EQ(letters.json()["dead_letters"][0]["id"], id);
  EXPECT_EQ(letters.json()["dead_letters"][0]["event"]["fail"], "always");

  // The bug is fixed; the dead letter runs again, from scratch.
  deploy("f", {{"async", {{"retries", 1}}}},
         "exports.handler = async (event) => ({ fixed: event.fail });\n");
  auto redriven =
      daemon_.admin("POST", "/v1/functions/f/dead-letters/redrive", json{{"ids", {id}}}.dump());
  ASSERT_EQ(redriven.status, 200) << redriven.body;
  EXPECT_EQ(redriven.json()["redriven"], 1);
  json done = wait_for(id, "succeeded");
  EXPECT_EQ(done["result"]["fixed"], "always") << done.dump();
  EXPECT_EQ(done["attempts"], 1);
  EXPECT_EQ(daemon_.admin("GET", "/v1/functions/f/dead-letters").json()["dead_letters"].size(), 0u);
}

TEST_F(EventsE2E, LambdasEventTypeIsAccepted) {
  deploy("f");
  auto r = http_request(daemon_.port(), "POST", "/2015-03-31/functions/f/invocations",
                        R"({"from":"lambda"})", {{"X-Amz-Invocation-Type", "Event"}});
  ASSERT_EQ(r.status, 202) << r.body;
  EXPECT_TRUE(r.body.empty());
  const std::string id = r.header("x-amzn-requestid");
  ASSERT_FALSE(id.empty());
  json done = wait_for(id, "succeeded");
  EXPECT_EQ(done["result"]["got"]["from"], "lambda") << done.dump();
  EXPECT_EQ(done["source"], "lambda");
}

TEST_F(EventsE2E, BadRequestsAreRefusedBeforeAnythingIsQueued) {
  deploy("f");
  EXPECT_EQ(send("nope", json::object()).status, 404);
  auto mode = http_request(daemon_.port(), "POST", "/v1/functions/f/invoke?mode=later", "{}");
  EXPECT_EQ(mode.status, 400) << mode.body;
  EXPECT_EQ(daemon_.admin("GET", "/v1/functions/nope/dead-letters").status, 404);
  EXPECT_EQ(
      daemon_.admin("POST", "/v1/functions/f/dead-letters/redrive", R"({"ids":["x"]})").status,
      404);
}

TEST_F(EventsE2E, AKillNineInTheMiddleOfABurstLosesNoAcceptedEvent) {
  deploy("f", {{"max_instances", 4}});
  constexpr int kEvents = 1000;
  std::vector<std::future<std::vector<int>>> senders;
  std::atomic<int> next{0};
  for (int t = 0; t < 8; ++t) {
    senders.push_back(std::async(std::launch::async, [&] {
      std::vector<int> accepted;
      for (int n = next++; n < kEvents; n = next++) {
        auto r = send("f", {{"n", n}});
        if (r.status == 202) accepted.push_back(n);
      }
      return accepted;
    }));
  }
  // Mid-burst: some events are accepted, some are running, most are still to come.
  ASSERT_TRUE(eventually([&] { return next.load() >= kEvents / 2; }));
  ASSERT_EQ(daemon_.stop(SIGKILL), 128 + SIGKILL);
  std::set<int> accepted;
  for (auto& s : senders) {
    for (int n : s.get()) accepted.insert(n);
  }
  // With eight senders, half the events were taken when the daemon died: about that many were
  // accepted, and many of those had not run yet.
  ASSERT_GE(accepted.size(), static_cast<size_t>(kEvents / 4));
  RecordProperty("accepted_before_kill", static_cast<int>(accepted.size()));
  ASSERT_TRUE(daemon_.start()) << daemon_.log();
  // Every accepted event runs to success at least once: its key is in the store.
  std::set<int> seen;
  EXPECT_TRUE(eventually(
      [&] {
        seen.clear();
        std::string cursor;
        while (true) {
          auto page = daemon_.admin("GET", "/v1/kv/f?prefix=seen/&limit=1000" +
                                               (cursor.empty() ? "" : "&cursor=" + cursor));
          if (page.status != 200) return false;
          json j = page.json();
          for (const auto& item : j["items"]) {
            seen.insert(std::stoi(item["key"].get<std::string>().substr(5)));
          }
          if (!j["cursor"].is_string()) break;
          cursor = j["cursor"];
        }
        return std::includes(seen.begin(), seen.end(), accepted.begin(), accepted.end());
      },
      std::chrono::milliseconds(60'000)))
      << accepted.size() << " accepted, " << seen.size() << " seen";
}

// Records each scheduled event it gets: the time it was due, and how late it started.
constexpr const char* kScheduled = R"(exports.handler = async (event, context) => {
  const due = Date.parse(event.time);
  await context.kv.put('fire/' + due, { late_ms: Date.now() - due, type: event['detail-type'] });
  return due;
};
)";

// The fires recorded so far: due time (ms) → how late the handler started.
std::map<int64_t, int64_t> fires(const Daemon& daemon) {
  std::map<int64_t, int64_t> out;
  auto page = daemon.admin("GET", "/v1/kv/clock?prefix=fire/&limit=1000");
  if (page.status != 200) return out;
  const json body = page.json();  // kept: a range over a temporary's member would dangle
  for (const auto& item : body["items"]) {
    out[std::stoll(item["key"].get<std::string>().substr(5))] = item["value"]["late_ms"];
  }
  return out;
}

TEST_F(EventsE2E, AScheduleFiresOnTimeAndCatchesUpOnceAfterARestart) {
  deploy("clock", {{"schedule", {"rate(1 second)"}}}, kScheduled);
  auto record = daemon_.admin("GET", "/v1/functions/clock").json();
  ASSERT_EQ(record["next_fires"].size(), 1u) << record.dump();
  EXPECT_EQ(record["next_fires"][0]["schedule"], "rate(1 second)");
  EXPECT_EQ(record["next_fires"][0]["at_ms"].get<int64_t>() % 1000, 0);
  // Three fires, each due on a whole second and started within it.
  std::map<int64_t, int64_t> seen;
  ASSERT_TRUE(eventually([&] {
    seen = fires(daemon_);
    return seen.size() >= 3;
  })) << daemon_.admin("GET", "/v1/kv/clock?prefix=fire/&limit=1000").body;
  for (const auto& [due, late] : seen) {
    EXPECT_EQ(due % 1000, 0);
    EXPECT_LT(late, 1000) << "due at " << due;
  }
  // Stopped for a few seconds: at start one missed fire is sent, late, and then it goes on.
  auto wall_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  ASSERT_EQ(daemon_.stop(SIGTERM), 0);
  const int64_t down_from = wall_ms();
  std::this_thread::sleep_for(std::chrono::milliseconds(4500));
  const int64_t down_to = wall_ms();
  ASSERT_TRUE(daemon_.start()) << daemon_.log();
  ASSERT_TRUE(eventually([&] {
    seen = fires(daemon_);
    return !seen.empty() && seen.rbegin()->first >= down_to + 1000;
  }));
  // Of the fires due well inside the downtime, one at most was sent (the catch-up), late.
  int sent_while_down = 0;
  for (const auto& [due, late] : seen) {
    if (due > down_from + 1000 && due < down_to - 1000) {
      ++sent_while_down;
      EXPECT_GE(late, 1000) << "sent at the restart";
    }
  }
  EXPECT_LE(sent_while_down, 1);
  EXPECT_NE(daemon_.log().find("missed its fire"), std::string::npos);
}

}  // namespace
}  // namespace ember::testing
