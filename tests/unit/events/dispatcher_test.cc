// The dispatcher of asynchronous invocations against the real SQLite store and registry, with a
// scripted runner in place of the scheduler and a FakeClock for every decision of time.
#include "ember/events/dispatcher.h"

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <deque>
#include <future>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "archive_builder.h"
#include "ember/events/timetable.h"
#include "postgres_server.h"
#include "temp_dir.h"

namespace ember::events {
namespace {

namespace asio = boost::asio;
using nlohmann::json;
using Kind = scheduler::InvokeOutcome::Kind;
using std::chrono::milliseconds;

// Every test runs on the embedded store and on the PostgreSQL one (as one node of a shared
// store; skipped where PostgreSQL is not installed).
class DispatcherTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "postgres") {
      std::string why;
      server_ = testing::PostgresServer::shared(&why);
      if (!server_) GTEST_SKIP() << why;
      conninfo_ = server_->create_database();
    }
    registry::RegistryOptions options;
    options.state_dir = tmp_.path() / "state";
    options.clock = &clock_;
    auto r = registry::Registry::open(options);
    ASSERT_TRUE(r.ok()) << r.error().message;
    registry_ = std::move(*r);
    store_ = open_store("node-a");
    ASSERT_TRUE(store_);
  }
  std::unique_ptr<Store> open_store(const std::string& node,
                                    milliseconds lease = milliseconds(10'000)) {
    auto s = GetParam() == "postgres" ? open_postgres(PostgresOptions{conninfo_, node, lease})
                                      : open_sqlite(tmp_.path() / "events.db");
    EXPECT_TRUE(s.ok()) << s.error().message;
    return s.ok() ? std::move(*s) : nullptr;
  }
  void TearDown() override {
    dispatcher_.reset();
    store_.reset();
  }

  void deploy(const std::string& name, json config = json::object()) {
    json manifest = {{"runtime", "node"}, {"handler", "index.handler"}};
    manifest.update(config);
    registry::DeployRequest req;
    req.name = name;
    req.bundle = testing::ArchiveBuilder(testing::ArchiveKind::kZip)
                     .file("function.json", manifest.dump())
                     .file("index.js", "exports.handler = async () => 1;\n")
                     .build();
    auto change = registry_->deploy(req);
    ASSERT_TRUE(change.ok()) << change.error().message;
  }

  // Each attempt gets the next scripted outcome (then kOk); `hold` keeps attempts running until
  // released.
  Dispatcher& start(DispatcherOptions options = {}) {
    options.seed = 42;
    dispatcher_ = std::make_unique<Dispatcher>(
        io_, *store_, *registry_,
        [this](const Event& event,
               scheduler::InvokeRequest request) -> asio::awaitable<scheduler::InvokeOutcome> {
          calls_.push_back({event.function, request.event_json, request.qualifier, clock_.wall_ms(),
                            request.depth});
          ++running_;
          while (hold_) {
            asio::steady_timer t(io_, milliseconds(1));
            co_await t.async_wait(asio::use_awaitable);
          }
          --running_;
          scheduler::InvokeOutcome o;
          o.kind = Kind::kOk;
          o.body = R"({"ok":true})";
          o.version = 1;
          if (!script_.empty()) {
            o = script_.front();
            script_.pop_front();
          }
          co_return o;
        },
        options, clock_);
    auto st = dispatcher_->start();
    EXPECT_TRUE(st.ok()) << (st.ok() ? "" : st.error().message);
    return *dispatcher_;
  }

  Result<std::string> send(const std::string& function, const std::string& payload = "{}") {
    std::optional<Result<std::string>> out;
    auto sending = [&]() -> asio::awaitable<void> {
      SendRequest request{function, "", payload};
      auto sent = co_await dispatcher_->send(std::move(request));
      out = std::move(sent);
    };
    asio::co_spawn(io_, sending, asio::detached);
    EXPECT_TRUE(run_until([&] { return out.has_value(); }));
    return out ? std::move(*out) : Result<std::string>(Error::invalid("no answer"));
  }

  template <class F>
  bool run_until(F done) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (!done()) {
      if (std::chrono::steady_clock::now() > until) return false;
      io_.restart();
      io_.run_for(milliseconds(1));
    }
    return true;
  }
  // The event as stored, once the dispatcher no longer holds it (its last change committed).
  std::optional<Event> settled(const std::string& id) {
    if (!run_until([&] { return !dispatcher_->find(id).has_value(); })) return std::nullopt;
    auto e = store_->get(id);
    return e.ok() ? *e : std::nullopt;
  }
  static scheduler::InvokeOutcome failure(std::string message = "boom") {
    scheduler::InvokeOutcome o;
    o.kind = Kind::kFunctionError;
    o.body = json{{"errorType", "Error"}, {"errorMessage", message}}.dump();
    o.version = 1;
    return o;
  }

  struct Call {
    std::string function, payload, qualifier;
    int64_t at_ms;
    int depth;
  };
  testing::PostgresServer* server_ = nullptr;
  std::string conninfo_;
  testing::TempDir tmp_;
  asio::io_context io_;
  FakeClock clock_;
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::deque<scheduler::InvokeOutcome> script_;
  std::vector<Call> calls_;
  bool hold_ = false;
  int running_ = 0;
};

INSTANTIATE_TEST_SUITE_P(Backends, DispatcherTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

TEST_P(DispatcherTest, AnAcceptedEventIsStoredThenRunsOnceAndItsResultIsKept) {
  deploy("f");
  start();
  auto id = send("f", R"({"n":1})");
  ASSERT_TRUE(id.ok()) << id.error().message;
  auto stored = store_->get(*id);
  ASSERT_TRUE(stored.ok() && stored->has_value()) << "durable before send() completes";
  auto done = settled(*id);
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->state, State::kSucceeded);
  EXPECT_EQ(done->attempts, 1);
  EXPECT_EQ(done->result, R"({"ok":true})");
  ASSERT_EQ(calls_.size(), 1u);
  EXPECT_EQ(calls_[0].payload, R"({"n":1})");
  EXPECT_EQ(dispatcher_->stats().succeeded, 1u);
}

TEST_P(DispatcherTest, FailuresAreRetriedWithBackoffThenDead) {
  deploy("f", {{"async", {{"retries", 2}}}});
  DispatcherOptions o;
  o.retry_base = milliseconds(60'000);
  start(o);
  script_ = {failure("one"), failure("two"), failure("three")};
  auto id = send("f");
  ASSERT_TRUE(run_until([&] { return calls_.size() == 1 && running_ == 0; }));
  // The first retry waits between half and all of retry_base; nothing runs before that.
  clock_.advance(milliseconds(29'999));
  dispatcher_->poke();
  io_.run_for(milliseconds(5));
  EXPECT_EQ(calls_.size(), 1u);
  clock_.advance(milliseconds(30'001));
  dispatcher_->poke();
  ASSERT_TRUE(run_until([&] { return calls_.size() == 2 && running_ == 0; }));
  auto waiting = dispatcher_->find(*id);
  ASSERT_TRUE(waiting.has_value());
  EXPECT_EQ(waiting->state, State::kQueued);
  EXPECT_EQ(waiting->attempts, 2);
  // The second waits between one and two retry_base.
  const int64_t second_wait = waiting->next_ms - clock_.wall_ms();
  EXPECT_GE(second_wait, 60'000);
  EXPECT_LE(second_wait, 120'000);
  clock_.advance(milliseconds(second_wait));
  dispatcher_->poke();
  auto dead = settled(*id);
  ASSERT_TRUE(dead.has_value());
  EXPECT_EQ(calls_.size(), 3u) << "one attempt and two retries";
  EXPECT_EQ(dead->state, State::kDead);
  EXPECT_EQ(json::parse(dead->result)["errorMessage"], "three");
  auto listed = store_->list("f", State::kDead, 10, "");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->size(), 1u);
  EXPECT_EQ(dispatcher_->stats().retries, 2u);
  EXPECT_EQ(dispatcher_->stats().dead, 1u);
}

TEST_P(DispatcherTest, AThrottledAttemptIsNotCountedAndRunsAgain) {
  deploy("f", {{"async", {{"retries", 0}}}});
  start();
  scheduler::InvokeOutcome throttled;
  throttled.kind = Kind::kThrottled;
  script_ = {throttled};
  auto id = send("f");
  ASSERT_TRUE(run_until([&] { return calls_.size() == 1 && running_ == 0; }));
  clock_.advance(milliseconds(1000));
  dispatcher_->poke();
  auto done = settled(*id);
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->state, State::kSucceeded);
  EXPECT_EQ(done->attempts, 1);
}

TEST_P(DispatcherTest, AnEventPastItsMaximumAgeIsNotRun) {
  deploy("f", {{"async", {{"retries", 2}, {"max_age_s", 60}}}});
  DispatcherOptions o;
  o.retry_base = milliseconds(200'000);  // the first retry would come after the age limit
  start(o);
  script_ = {failure()};
  auto id = send("f");
  auto dead = settled(*id);
  ASSERT_TRUE(dead.has_value());
  EXPECT_EQ(dead->state, State::kDead);
  EXPECT_EQ(dead->attempts, 1);
}

TEST_P(DispatcherTest, OnFailureSendsLambdasDestinationRecordToAnotherFunction) {
  deploy("catcher");
  deploy("f", {{"async", {{"retries", 0}, {"on_failure", "function:catcher"}}}});
  start();
  script_ = {failure("nope")};
  auto id = send("f", R"({"order":7})");
  auto failed = settled(*id);
  ASSERT_TRUE(failed.has_value());
  EXPECT_EQ(failed->state, State::kFailed);
  ASSERT_TRUE(run_until([&] { return calls_.size() == 2 && running_ == 0; }));
  EXPECT_EQ(calls_[1].function, "catcher");
  json record = json::parse(calls_[1].payload);
  EXPECT_EQ(record["requestContext"]["requestId"], *id);
  EXPECT_EQ(record["requestContext"]["condition"], "RetriesExhausted");
  EXPECT_EQ(record["requestContext"]["approximateInvokeCount"], 1);
  EXPECT_EQ(record["requestPayload"]["order"], 7);
  EXPECT_EQ(record["responsePayload"]["errorMessage"], "nope");
}

TEST_P(DispatcherTest, AnOnFailureLoopEndsAsADeadLetterAtTheDepthLimit) {
  // f fails over to g and g to f: each hop is one call deeper, and the hop past the limit is
  // refused, so the last event is a dead letter instead of a loop.
  deploy("f", {{"async", {{"retries", 0}, {"on_failure", "function:g"}}}});
  deploy("g", {{"async", {{"retries", 0}, {"on_failure", "function:f"}}}});
  DispatcherOptions options;
  options.max_call_depth = 3;
  start(options);
  script_ = {failure(), failure(), failure(), failure(), failure()};
  ASSERT_TRUE(send("f").ok());
  ASSERT_TRUE(run_until([&] { return dispatcher_->stats().dead == 1 && running_ == 0; }));
  ASSERT_EQ(calls_.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(calls_[i].function, i % 2 == 0 ? "f" : "g");
    EXPECT_EQ(calls_[i].depth, i) << "the attempt is told its depth, for the calls it makes";
  }
  EXPECT_EQ(dispatcher_->stats().failed, 3u);
  SendRequest deep{"f", "", "{}", "function:g", 4};
  std::optional<Result<std::string>> refused;
  asio::co_spawn(
      io_,
      [&]() -> asio::awaitable<void> {
        auto sent = co_await dispatcher_->send(std::move(deep));
        refused = std::move(sent);
      },
      asio::detached);
  ASSERT_TRUE(run_until([&] { return refused.has_value(); }));
  ASSERT_FALSE(refused->ok());
  EXPECT_EQ(refused->error().field, "depth");
}

TEST_P(DispatcherTest, QueueLimitsRefuseWithUnavailable) {
  deploy("f", {{"max_instances", 1}});
  DispatcherOptions o;
  o.max_per_function = 2;
  start(o);
  hold_ = true;
  ASSERT_TRUE(send("f").ok());
  ASSERT_TRUE(send("f").ok());
  auto third = send("f");
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.error().code, Errc::kUnavailable);
  EXPECT_EQ(send("nope").error().code, Errc::kNotFound);
  hold_ = false;
  ASSERT_TRUE(run_until([&] { return calls_.size() == 2 && running_ == 0; }));
}

TEST_P(DispatcherTest, AsyncAttemptsTakeAtMostHalfTheInstances) {
  deploy("f", {{"max_instances", 4}});
  start();
  hold_ = true;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(send("f").ok());
  ASSERT_TRUE(run_until([&] { return running_ == 2; }));
  io_.run_for(milliseconds(20));
  EXPECT_EQ(running_, 2) << "two of four instances stay for synchronous callers";
  hold_ = false;
  ASSERT_TRUE(run_until([&] { return calls_.size() == 5 && running_ == 0; }));
}

TEST_P(DispatcherTest, AFunctionAtItsShareDoesNotHoldBackAnother) {
  deploy("f", {{"max_instances", 2}});
  deploy("g", {{"max_instances", 2}});
  start();
  hold_ = true;
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(send("f").ok());
  ASSERT_TRUE(run_until([&] { return running_ == 1; })) << "f's share is one attempt";
  ASSERT_TRUE(send("g").ok());
  ASSERT_TRUE(run_until([&] { return running_ == 2; })) << "g runs beside f's queue";
  EXPECT_EQ(calls_.back().function, "g");
  EXPECT_EQ(dispatcher_->stats().queued, 49u);
  hold_ = false;
  ASSERT_TRUE(run_until(
      [&] { return calls_.size() == 51 && running_ == 0 && dispatcher_->stats().queued == 0; }));
  EXPECT_EQ(dispatcher_->stats().succeeded, 51u);
}

TEST_P(DispatcherTest, ARestartResumesQueuedAndRunningEvents) {
  deploy("f");
  // What a daemon killed in the middle of things leaves: one event waiting for a retry, one
  // whose attempt was running.
  for (auto [id, state] : {std::pair{"a", State::kQueued}, std::pair{"b", State::kRunning}}) {
    Event e;
    e.id = id;
    e.function = "f";
    e.payload = std::make_shared<const std::string>(std::string(R"({"id":")") + id + "\"}");
    e.state = state;
    e.attempts = 1;
    e.max_age_ms = 3'600'000;
    e.created_ms = e.updated_ms = clock_.wall_ms();
    e.next_ms = clock_.wall_ms() + 5'000;
    ASSERT_TRUE(store_->save_now(e).ok());
  }
  start();
  auto b = settled("b");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->state, State::kSucceeded) << "a cut-short attempt runs again at once";
  EXPECT_EQ(b->attempts, 2);
  EXPECT_TRUE(dispatcher_->find("a").has_value()) << "a retry keeps its time";
  clock_.advance(milliseconds(5'000));
  dispatcher_->poke();
  auto a = settled("a");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->state, State::kSucceeded);
}

TEST_P(DispatcherTest, ARedrivenDeadLetterRunsAgainFromScratch) {
  deploy("f", {{"async", {{"retries", 0}}}});
  start();
  script_ = {failure()};
  auto id = send("f");
  auto dead = settled(*id);
  ASSERT_EQ(dead->state, State::kDead);
  std::optional<Result<size_t>> n;
  auto redriving = [&]() -> asio::awaitable<void> {
    std::vector<Event> dead_letters{*dead};
    auto redriven = co_await dispatcher_->redrive(std::move(dead_letters));
    n = std::move(redriven);
  };
  asio::co_spawn(io_, redriving, asio::detached);
  ASSERT_TRUE(run_until([&] { return n.has_value(); }));
  EXPECT_EQ(**n, 1u);
  auto again = settled(*id);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->state, State::kSucceeded);
  EXPECT_EQ(again->attempts, 1);
}

TEST_P(DispatcherTest, ASchedulesFiresComeOnTheClock) {
  deploy("f", {{"schedule", {"rate(1 minute)"}}});
  start();
  Timetable timetable(io_, *store_, *registry_, *dispatcher_, clock_);
  ASSERT_TRUE(timetable.start().ok());
  auto next = timetable.next_fires("f");
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].first, "rate(1 minute)");
  const int64_t due = next[0].second;
  EXPECT_EQ(due % 60'000, 0);
  EXPECT_GT(due, clock_.wall_ms());
  io_.run_for(milliseconds(5));
  EXPECT_TRUE(calls_.empty()) << "a new schedule does not fire at once";
  clock_.advance(milliseconds(due - clock_.wall_ms()));
  timetable.poke();
  ASSERT_TRUE(run_until([&] { return calls_.size() == 1 && running_ == 0; }));
  json event = json::parse(calls_[0].payload);
  EXPECT_EQ(event["detail-type"], "Scheduled Event");
  EXPECT_EQ(event["source"], "aws.events");
  EXPECT_EQ(event["time"], format_utc(due / 1000, "%Y-%m-%dT%H:%M:%SZ"));
  EXPECT_EQ(timetable.next_fires("f")[0].second, due + 60'000);
  timetable.stop();
}

TEST_P(DispatcherTest, AfterADowntimeOneMissedFireIsSentThenTheScheduleGoesOn) {
  deploy("f", {{"schedule", {"rate(1 minute)"}}});
  // The schedule last fired five minutes before now: four fires were missed.
  const int64_t minute = clock_.wall_ms() / 60'000 * 60'000;
  std::promise<Status> saved;
  store_->fired("f", "rate(1 minute)", minute - 5 * 60'000,
                [&](Status st) { saved.set_value(std::move(st)); });
  ASSERT_TRUE(saved.get_future().get().ok());
  start();
  Timetable timetable(io_, *store_, *registry_, *dispatcher_, clock_);
  ASSERT_TRUE(timetable.start().ok());
  ASSERT_TRUE(run_until([&] { return calls_.size() == 1 && running_ == 0; }));
  io_.run_for(milliseconds(20));
  ASSERT_EQ(calls_.size(), 1u) << "one catch-up, not four";
  EXPECT_EQ(json::parse(calls_[0].payload)["ember"]["due_ms"], minute - 4 * 60'000);
  EXPECT_EQ(timetable.next_fires("f")[0].second, minute + 60'000);
  timetable.stop();
}

// Several nodes on one PostgreSQL store.
class SharedEventsTest : public DispatcherTest {
 protected:
  // What a node that stopped looks like to the others once its lease ran out.
  void declare_dead(const std::string& node) {
    PGconn* c = PQconnectdb(conninfo_.c_str());
    PGresult* r =
        PQexec(c, ("UPDATE ember_nodes SET alive_ms = 0 WHERE node = '" + node + "'").c_str());
    EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQerrorMessage(c);
    PQclear(r);
    PQfinish(c);
  }
  Event queued(const std::string& id) {
    Event e;
    e.id = id;
    e.function = "f";
    e.payload = std::make_shared<const std::string>("{}");
    e.max_age_ms = 3'600'000;
    e.created_ms = e.updated_ms = e.next_ms = clock_.wall_ms();
    return e;
  }
  static Result<std::vector<Event>> adopt(Store& store, size_t limit) {
    std::promise<Result<std::vector<Event>>> taken;
    store.keep_alive(limit, [&](Result<std::vector<Event>> r) { taken.set_value(std::move(r)); });
    return taken.get_future().get();
  }
};

INSTANTIATE_TEST_SUITE_P(Postgres, SharedEventsTest, ::testing::Values("postgres"),
                         [](const auto& info) { return info.param; });

TEST_P(SharedEventsTest, TheEventsOfAStoppedNodeAreTakenOverEachByOneNode) {
  constexpr int kEvents = 60;
  for (int i = 0; i < kEvents; ++i) ASSERT_TRUE(store_->save_now(queued(std::to_string(i))).ok());
  auto b = open_store("node-b"), c = open_store("node-c");
  // While node-a is alive its events are its own.
  auto none = adopt(*b, 1000);
  ASSERT_TRUE(none.ok()) << none.error().message;
  EXPECT_TRUE(none->empty());
  declare_dead("node-a");
  Result<std::vector<Event>> by_b = std::vector<Event>{}, by_c = std::vector<Event>{};
  std::thread tb([&] { by_b = adopt(*b, 1000); });
  std::thread tc([&] { by_c = adopt(*c, 1000); });
  tb.join();
  tc.join();
  ASSERT_TRUE(by_b.ok() && by_c.ok());
  std::set<std::string> ids;
  for (const auto& e : *by_b) ids.insert(e.id);
  for (const auto& e : *by_c) EXPECT_TRUE(ids.insert(e.id).second) << e.id << " taken twice";
  EXPECT_EQ(ids.size(), size_t{kEvents}) << "every event was taken over";
  std::cout << "[ events   ] node-b took " << by_b->size() << ", node-c " << by_c->size() << "\n";
  // node-a comes back: what it writes about an event taken over is refused, not applied.
  Event late = queued(by_b->empty() ? by_c->front().id : by_b->front().id);
  late.state = State::kSucceeded;
  Status st = store_->save_now(late);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, Errc::kConflict);
  EXPECT_EQ((*store_->get(late.id))->state, State::kQueued);
  // Nor about one finished since by the node that took it over.
  Event done = by_c->empty() ? by_b->back() : by_c->back();
  Store& holder = by_c->empty() ? *b : *c;
  done.state = State::kSucceeded;
  ASSERT_TRUE(holder.save_now(done).ok());
  Event stale = done;
  stale.state = State::kRunning;
  stale.attempts = 1;
  EXPECT_EQ(store_->save_now(stale).error().field, "node") << "a slow node's stale write";
  EXPECT_EQ((*store_->get(done.id))->state, State::kSucceeded);
  // A dead letter may be queued again from scratch (redriven) by any node, which then holds it;
  // a stale retry of it may not.
  done.state = State::kDead;
  ASSERT_TRUE(holder.save_now(done).ok());
  Event retry = done;
  retry.state = State::kQueued;
  retry.attempts = 2;
  EXPECT_FALSE(store_->save_now(retry).ok());
  done.state = State::kQueued;
  done.attempts = 0;
  ASSERT_TRUE(store_->save_now(done).ok()) << "node-a redrives a dead letter";
}

TEST_P(SharedEventsTest, EachScheduleFireIsSentByOneNode) {
  auto b = open_store("node-b");
  Event one = queued("fire-a"), two = queued("fire-b");
  for (Event* e : {&one, &two}) {
    e->fire_expression = "rate(1 minute)";
    e->fire_due_ms = 120'000;
  }
  Status first = store_->save_now(one), second = b->save_now(two);
  EXPECT_TRUE(first.ok());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, Errc::kConflict);
  EXPECT_FALSE(b->get("fire-b")->has_value()) << "the losing node stored no event";
  auto fires = b->fire_times();
  ASSERT_TRUE(fires.ok());
  EXPECT_EQ((*fires)[std::make_pair(std::string("f"), std::string("rate(1 minute)"))], 120'000);
}

TEST_P(SharedEventsTest, ADispatcherRunsTheEventsItTakesOver) {
  deploy("f");
  for (const char* id : {"x", "y", "z"}) {
    Event e = queued(id);
    if (std::string(id) == "y") e.state = State::kRunning;  // its attempt was cut short
    ASSERT_TRUE(store_->save_now(e).ok());
  }
  auto node_a = std::move(store_);
  store_ = open_store("node-b", milliseconds(60));  // says it is alive every 20 ms
  start();
  declare_dead("node-a");
  ASSERT_TRUE(run_until([&] { return calls_.size() == 3 && running_ == 0; }));
  for (const char* id : {"x", "y", "z"}) {
    auto e = settled(id);
    ASSERT_TRUE(e.has_value()) << id;
    EXPECT_EQ(e->state, State::kSucceeded) << id;
    EXPECT_EQ(e->attempts, 1) << id;
  }
  EXPECT_EQ(calls_.size(), 3u);
}

}  // namespace
}  // namespace ember::events
