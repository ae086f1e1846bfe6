// The Scheduler's mechanics on a fake clock and a fake instance factory: hand-off to waiters,
// retries of calls that never started, pipelining, drain on remove, eviction under the memory
// budget, idle reaping, and 429 at the queue limit. No process starts and nothing sleeps: the
// test answers each call and moves the clock.
#include "ember/scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <deque>

#include "archive_builder.h"
#include "ember/scheduler/policy.h"
#include "fake_runtime.h"
#include "temp_dir.h"

namespace ember::scheduler {
namespace {

namespace asio = boost::asio;
using nlohmann::json;
using std::chrono::milliseconds;
using testing::FakeFactory;
using testing::FakeInstance;
using Kind = InvokeOutcome::Kind;
using Outcome = std::shared_ptr<std::optional<InvokeOutcome>>;

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry::RegistryOptions options;
    options.state_dir = tmp_ / "state";
    options.clock = &clock_;
    auto r = registry::Registry::open(options);
    ASSERT_TRUE(r.ok()) << r.error().message;
    registry_ = std::move(*r);
  }
  void TearDown() override {
    if (scheduler_) {
      bool done = false;
      asio::co_spawn(io_, scheduler_->shutdown(), [&](std::exception_ptr) { done = true; });
      run_until([&] { return done; });
    }
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
    if (scheduler_) scheduler_->on_deployed(change->record);
  }

  Scheduler& start(SchedulerOptions options = {}) {
    options.reap_interval = milliseconds(1);
    options.eager_instances = options.eager_instances ? options.eager_instances : 100;
    scheduler_ = std::make_unique<Scheduler>(io_, factory_, *registry_, logs_, options, clock_);
    scheduler_->start();
    return *scheduler_;
  }

  // Starts a call; its outcome lands in the returned slot once it is answered. Scheduler::invoke
  // reads the function's name until it completes, so the name is kept here.
  Outcome invoke(const std::string& name, const std::string& body = "{}", int version = 0,
                 std::string qualifier = {}) {
    auto out = std::make_shared<std::optional<InvokeOutcome>>();
    const std::string& kept = names_.emplace_back(name);
    asio::co_spawn(io_,
                   scheduler_->invoke(kept, InvokeRequest{"req-" + std::to_string(++calls_), body,
                                                          "invoke", version, qualifier}),
                   [out](std::exception_ptr e, InvokeOutcome o) {
                     if (e) {
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& ex) {
                         ADD_FAILURE() << "invoke threw: " << ex.what();
                       }
                       return;
                     }
                     *out = std::move(o);
                   });
    return out;
  }

  // Two eager instances and no pipelining, so that the scale-out past eager_instances is seen.
  Scheduler& start_with_two_eager_instances() {
    SchedulerOptions options;
    options.eager_instances = 2;
    options.pipeline_depth = 0;
    return start(options);
  }

  // Answers calls on every instance until each of `calls` has its outcome.
  void answer_everything(const std::vector<Outcome>& calls) {
    const auto all_answered = [&] {
      return std::all_of(calls.begin(), calls.end(),
                         [](const Outcome& c) { return c->has_value(); });
    };
    for (int round = 0; round < 50 && !all_answered(); ++round) {
      for (auto& instance : factory_.started()) {
        while (instance->unanswered() > 0) instance->answer_ok();
      }
      settle();
    }
    EXPECT_TRUE(all_answered());
  }

  // Turns the event loop until `done` holds; false after two seconds of real time. The fake
  // clock only moves when a test moves it.
  template <class F>
  bool run_until(F done) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (!done()) {
      if (std::chrono::steady_clock::now() > until) return false;
      io_.restart();
      io_.run_for(milliseconds(1));
    }
    return true;
  }
  // Lets every handler that is ready run.
  void settle() {
    for (int i = 0; i < 20; ++i) {
      io_.restart();
      io_.poll();
    }
  }

  testing::TempDir tmp_;
  asio::io_context io_;
  FakeClock clock_;
  FakeFactory factory_{io_, clock_};
  logs::LogStore logs_{1 << 20};
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<Scheduler> scheduler_;
  std::deque<std::string> names_;  // the names of calls started by invoke()
  int calls_ = 0;
};

TEST_F(SchedulerTest, ColdStartThenWarmOnTheSameInstance) {
  deploy("f");
  start();
  auto first = invoke("f");
  ASSERT_TRUE(run_until(
      [&] { return factory_.started().size() == 1 && factory_.started()[0]->unanswered() == 1; }));
  factory_.started()[0]->answer_ok("1");
  ASSERT_TRUE(run_until([&] { return first->has_value(); }));
  EXPECT_EQ((*first)->kind, Kind::kOk);
  EXPECT_EQ((*first)->body, "1");
  EXPECT_TRUE((*first)->cold);

  auto second = invoke("f");
  ASSERT_TRUE(run_until([&] { return factory_.started()[0]->unanswered() == 1; }));
  factory_.started()[0]->answer_ok("2");
  ASSERT_TRUE(run_until([&] { return second->has_value(); }));
  EXPECT_EQ((*second)->kind, Kind::kOk);
  EXPECT_FALSE((*second)->cold);
  EXPECT_EQ(factory_.started().size(), 1u) << "the warm instance was reused";
}

TEST_F(SchedulerTest, AWaiterGetsTheInstanceTheCallAheadReleases) {
  deploy("f", {{"max_instances", 1}});
  start();
  auto a = invoke("f");
  auto b = invoke("f");
  ASSERT_TRUE(run_until(
      [&] { return !factory_.started().empty() && factory_.started()[0]->unanswered() == 1; }));
  settle();
  auto& instance = *factory_.started()[0];
  EXPECT_EQ(instance.calls().size(), 1u) << "the second call waits in the scheduler";
  EXPECT_EQ(factory_.started().size(), 1u) << "max_instances is 1";
  instance.answer_ok("\"a\"");
  ASSERT_TRUE(run_until([&] { return instance.calls().size() == 2; }))
      << "the released instance went to the waiter";
  instance.answer_ok("\"b\"");
  ASSERT_TRUE(run_until([&] { return a->has_value() && b->has_value(); }));
  EXPECT_EQ((*a)->body, "\"a\"");
  EXPECT_EQ((*b)->body, "\"b\"");
  EXPECT_GE((*b)->queued, std::chrono::nanoseconds(0));
}

TEST_F(SchedulerTest, ACallThatNeverStartedGoesToAnotherInstance) {
  deploy("f", {{"max_instances", 3}});
  start();
  auto call = invoke("f");
  ASSERT_TRUE(run_until(
      [&] { return !factory_.started().empty() && factory_.started()[0]->unanswered() == 1; }));
  worker::CallResult not_started;
  not_started.kind = worker::CallResult::Kind::kNotStarted;
  factory_.started()[0]->answer(not_started);
  factory_.started()[0]->exit("exited before the call's turn");
  ASSERT_TRUE(run_until([&] {
    return factory_.started().size() == 2 && factory_.started()[1]->unanswered() == 1;
  })) << "the call was retried on a new instance";
  factory_.started()[1]->answer_ok("\"retried\"");
  ASSERT_TRUE(run_until([&] { return call->has_value(); }));
  EXPECT_EQ((*call)->kind, Kind::kOk);
  EXPECT_EQ((*call)->body, "\"retried\"");
}

TEST_F(SchedulerTest, RetriesOfANeverStartedCallAreBounded) {
  deploy("f", {{"max_instances", 10}});
  start();
  auto call = invoke("f");
  worker::CallResult not_started;
  not_started.kind = worker::CallResult::Kind::kNotStarted;
  for (size_t attempt = 0; attempt < 3; ++attempt) {
    ASSERT_TRUE(run_until([&] {
      return factory_.started().size() > attempt && factory_.started()[attempt]->unanswered() == 1;
    })) << attempt;
    factory_.started()[attempt]->answer(not_started);
    factory_.started()[attempt]->exit("gone");
  }
  ASSERT_TRUE(run_until([&] { return call->has_value(); }));
  EXPECT_EQ((*call)->kind, Kind::kCrash);
  EXPECT_EQ(factory_.started().size(), 3u);
}

TEST_F(SchedulerTest, ShortQuietCallsArePipelinedToABusyInstance) {
  deploy("f", {{"max_instances", 1}});
  SchedulerOptions options;
  options.pipeline_depth = 1;
  start(options);
  // Enough short calls that printed nothing for the scheduler to trust the function.
  for (int i = 0; i < kPipelineQuietCalls; ++i) {
    auto c = invoke("f");
    ASSERT_TRUE(run_until(
        [&] { return !factory_.started().empty() && factory_.started()[0]->unanswered() == 1; }));
    factory_.started()[0]->answer_ok("1", std::chrono::microseconds(200));
    ASSERT_TRUE(run_until([&] { return c->has_value(); }));
  }
  auto& instance = *factory_.started()[0];
  const size_t before = instance.calls().size();
  auto running = invoke("f");
  auto pipelined = invoke("f");
  ASSERT_TRUE(run_until([&] { return instance.calls().size() == before + 2; }))
      << "the second call was sent to the busy instance";
  EXPECT_EQ(instance.unanswered(), 2);
  // A third would exceed concurrency + depth: it waits in the scheduler.
  auto waiting = invoke("f");
  settle();
  EXPECT_EQ(instance.calls().size(), before + 2);
  for (int i = 0; i < 3; ++i) {
    instance.answer_ok("1", std::chrono::microseconds(200));
    settle();
  }
  ASSERT_TRUE(run_until(
      [&] { return running->has_value() && pipelined->has_value() && waiting->has_value(); }));
  EXPECT_EQ((*pipelined)->kind, Kind::kOk);
  EXPECT_EQ((*waiting)->kind, Kind::kOk);
}

TEST_F(SchedulerTest, NoPipeliningBehindACallThatRunsLong) {
  deploy("f", {{"max_instances", 1}});
  SchedulerOptions options;
  options.pipeline_depth = 1;
  start(options);
  for (int i = 0; i < kPipelineQuietCalls; ++i) {
    auto c = invoke("f");
    ASSERT_TRUE(run_until(
        [&] { return !factory_.started().empty() && factory_.started()[0]->unanswered() == 1; }));
    factory_.started()[0]->answer_ok("1", std::chrono::microseconds(200));
    ASSERT_TRUE(run_until([&] { return c->has_value(); }));
  }
  auto& instance = *factory_.started()[0];
  auto running = invoke("f");
  ASSERT_TRUE(run_until([&] { return instance.unanswered() == 1; }));
  clock_.advance(kPipelineMaxCall * 2);  // the running call is now a long one
  const size_t before = instance.calls().size();
  auto next = invoke("f");
  settle();
  EXPECT_EQ(instance.calls().size(), before) << "the call waits for the instance instead";
  instance.answer_ok();
  ASSERT_TRUE(run_until([&] { return instance.calls().size() == before + 1; }));
  instance.answer_ok();
  ASSERT_TRUE(run_until([&] { return running->has_value() && next->has_value(); }));
}

TEST_F(SchedulerTest, PastEagerInstancesAWaitIsWeighedAgainstWhatAStartCostsNotItsLatency) {
  // Pre-started workers: each is ready 3 ms after its start, but making it took 60 ms, which
  // its pool spends again to replace it.
  factory_.set_start_times(milliseconds(3), milliseconds(60));
  deploy("f", {{"max_instances", 10}});
  start_with_two_eager_instances();
  std::vector<Outcome> calls;
  for (int i = 0; i < 12; ++i) calls.push_back(invoke("f"));
  ASSERT_TRUE(run_until([&] {
    return factory_.started().size() == 2 && factory_.started()[0]->unanswered() == 1 &&
           factory_.started()[1]->unanswered() == 1;
  }));
  // The first calls end and teach the scheduler that a call takes 100 µs; the queue moves on.
  for (auto& instance : factory_.started())
    instance->answer_ok("1", std::chrono::microseconds(100));
  settle();
  // The first waiter has now waited 10 ms, more than a start's 3 ms of latency, as every call
  // does when the CPUs are saturated; ten 100 µs calls on two instances are still far from
  // 60 ms of start.
  clock_.advance(milliseconds(10));
  factory_.started()[0]->answer_ok("1", std::chrono::microseconds(100));
  settle();
  EXPECT_EQ(factory_.started().size(), 2u) << "a wait shorter than a start's cost starts nothing";
  // Once the first waiter has waited what a start costs, the calls in flight are slow ones:
  // more instances start.
  clock_.advance(milliseconds(50));
  factory_.started()[1]->answer_ok("1", std::chrono::microseconds(100));
  settle();
  EXPECT_GT(factory_.started().size(), 2u);
  EXPECT_LE(factory_.started().size(), 10u) << "max_instances";
  answer_everything(calls);
}

TEST_F(SchedulerTest, PastEagerInstancesOnlyFunctionsWhoseCallsWaitOnOtherThingsScaleOut) {
  factory_.set_start_times(milliseconds(20), milliseconds(20));
  deploy("computes", {{"max_instances", 10}});
  deploy("waits", {{"max_instances", 10}});
  start_with_two_eager_instances();
  std::vector<Outcome> calls;
  for (int i = 0; i < 40; ++i) calls.push_back(invoke("computes"));
  for (int i = 0; i < 40; ++i) calls.push_back(invoke("waits"));
  ASSERT_TRUE(run_until([&] {
    return factory_.of("computes").size() == 2 && factory_.of("waits").size() == 2 &&
           factory_.started()[0]->unanswered() == 1 && factory_.started()[3]->unanswered() == 1;
  }));
  // Each instance ends a 10 ms call. Those of `computes` spent it all running or waiting for a
  // CPU; those of `waits` spent 0.5 ms on a CPU and the rest blocked. 38 queued calls of 10 ms
  // on two instances would wait 190 ms, far more than a 20 ms start.
  for (auto& i : factory_.of("computes")) {
    i->set_sched_times(os::SchedTimes{milliseconds(6), milliseconds(4)});
    i->answer_ok("1", milliseconds(10));
  }
  for (auto& i : factory_.of("waits")) {
    i->set_sched_times(os::SchedTimes{std::chrono::microseconds(500), milliseconds(0)});
    i->answer_ok("1", milliseconds(10));
  }
  settle();
  EXPECT_EQ(factory_.of("computes").size(), 2u) << "more instances would only wait for a CPU";
  EXPECT_GT(factory_.of("waits").size(), 2u);
  answer_everything(calls);
}

TEST_F(SchedulerTest, RemoveDrainsCallsInFlightThenStopsAndForgets) {
  deploy("f");
  start();
  auto call = invoke("f");
  ASSERT_TRUE(run_until(
      [&] { return !factory_.started().empty() && factory_.started()[0]->unanswered() == 1; }));
  bool removed = false;
  const std::string& name = names_.emplace_back("f");  // remove() reads it until it completes
  asio::co_spawn(io_, scheduler_->remove(name, milliseconds(10'000)),
                 [&](std::exception_ptr) { removed = true; });
  settle();
  EXPECT_FALSE(removed) << "remove waits for the call in flight";
  auto refused = invoke("f");
  ASSERT_TRUE(run_until([&] { return refused->has_value(); }));
  EXPECT_EQ((*refused)->kind, Kind::kUnavailable);
  factory_.started()[0]->answer_ok();
  ASSERT_TRUE(run_until([&] { return removed && call->has_value(); }));
  EXPECT_EQ((*call)->kind, Kind::kOk) << "the call in flight finished normally";
  EXPECT_TRUE(factory_.started()[0]->stopped());
  EXPECT_EQ(factory_.forgotten(), std::vector<std::string>{"f"});
}

TEST_F(SchedulerTest, TheMemoryBudgetEvictsTheLeastRecentlyUsedIdleInstance) {
  deploy("a", {{"memory_mb", 128}});
  deploy("b", {{"memory_mb", 128}});
  deploy("c", {{"memory_mb", 128}});
  SchedulerOptions options;
  options.memory_budget_mb = 256;
  start(options);
  for (const char* name : {"a", "b"}) {
    auto call = invoke(name);
    ASSERT_TRUE(run_until([&] {
      auto of = factory_.of(name);
      return !of.empty() && of[0]->unanswered() == 1;
    }));
    factory_.of(name)[0]->answer_ok();
    ASSERT_TRUE(run_until([&] { return call->has_value(); }));
    clock_.advance(std::chrono::seconds(1));  // a was used before b
  }
  EXPECT_EQ(scheduler_->memory_used_mb(), 256);
  auto call = invoke("c");
  ASSERT_TRUE(run_until([&] { return !factory_.of("c").empty(); }));
  EXPECT_TRUE(factory_.of("a")[0]->stopped()) << "a, idle longest, made room";
  EXPECT_FALSE(factory_.of("b")[0]->stopped());
  ASSERT_TRUE(run_until([&] { return factory_.of("c")[0]->unanswered() == 1; }));
  factory_.of("c")[0]->answer_ok();
  ASSERT_TRUE(run_until([&] { return call->has_value(); }));
  EXPECT_EQ((*call)->kind, Kind::kOk);
  EXPECT_EQ(scheduler_->memory_used_mb(), 256);
}

TEST_F(SchedulerTest, WorkersTheFactoryKeepsReadyCountAgainstTheMemoryBudget) {
  deploy("a", {{"memory_mb", 128}});
  deploy("b", {{"memory_mb", 128}});
  SchedulerOptions options;
  options.memory_budget_mb = 320;
  start(options);
  factory_.set_reserved_memory_mb(128);  // a pre-initialised worker waits
  auto first = invoke("a");
  ASSERT_TRUE(run_until([&] { return !factory_.of("a").empty(); }));
  factory_.of("a")[0]->answer_ok();
  ASSERT_TRUE(run_until([&] { return first->has_value(); }));
  auto second = invoke("b");
  ASSERT_TRUE(run_until([&] { return !factory_.of("b").empty(); }));
  EXPECT_TRUE(factory_.of("a")[0]->stopped())
      << "a's 128, 128 reserved and b's 128 are over 320: a goes";
  factory_.of("b")[0]->answer_ok();
  ASSERT_TRUE(run_until([&] { return second->has_value(); }));
}

TEST_F(SchedulerTest, IdleInstancesAreReapedAfterTheirTimeoutOnTheClock) {
  deploy("f", {{"idle_timeout_s", 60}});
  start();
  auto call = invoke("f");
  ASSERT_TRUE(run_until(
      [&] { return !factory_.started().empty() && factory_.started()[0]->unanswered() == 1; }));
  factory_.started()[0]->answer_ok();
  ASSERT_TRUE(run_until([&] { return call->has_value(); }));
  auto& instance = *factory_.started()[0];
  clock_.advance(std::chrono::seconds(59));
  settle();
  EXPECT_FALSE(instance.stopped()) << "not idle long enough yet";
  clock_.advance(std::chrono::seconds(2));
  ASSERT_TRUE(run_until([&] { return instance.stopped(); }));
  ASSERT_TRUE(run_until([&] { return scheduler_->live_instances() == 0; }));
}

TEST_F(SchedulerTest, TheHybridKeepAliveUnloadsThenPrewarmsBeforeTheNextCall) {
  // A function called every ten minutes. With the fixed policy (too little known yet) its
  // instance goes after idle_timeout_s, and each call is a cold start.
  deploy("f", {{"idle_timeout_s", 60}, {"keep_alive", "hybrid"}});
  start();
  auto call_and_answer = [&]() -> std::shared_ptr<FakeInstance> {
    auto call = invoke("f");
    std::shared_ptr<FakeInstance> serving;
    EXPECT_TRUE(run_until([&] {
      for (const auto& i : factory_.of("f")) {
        if (i->unanswered() == 1) serving = i;
      }
      return serving != nullptr;
    }));
    if (!serving) return nullptr;
    serving->answer_ok();
    EXPECT_TRUE(run_until([&] { return call->has_value(); }));
    return serving;
  };
  for (int i = 0; i < 11; ++i) {
    auto served = call_and_answer();
    ASSERT_NE(served, nullptr);
    clock_.advance(std::chrono::seconds(61));
    ASSERT_TRUE(run_until([&] { return served->stopped(); }))
        << "fixed: gone after 60 s, call " << i;
    clock_.advance(std::chrono::seconds(539));  // ten minutes between calls
    settle();
  }
  // Eleven calls, ten idle times of ten minutes: the histogram takes over. After this call the
  // instance goes at once, one is back 9 minutes later (the 5th percentile less 10%) and stays to
  // 12.1 minutes (the 99th percentile, 11 minutes, plus 10%).
  const size_t started_before = factory_.started().size();
  auto served = call_and_answer();
  ASSERT_NE(served, nullptr);
  clock_.advance(std::chrono::seconds(1));
  ASSERT_TRUE(run_until([&] { return served->stopped(); })) << "unloaded after the call";
  clock_.advance(std::chrono::seconds(8 * 60));
  settle();
  EXPECT_EQ(factory_.started().size(), started_before + 1) << "nothing pre-warmed too early";
  clock_.advance(std::chrono::seconds(65));  // 9 min 6 s after the call
  ASSERT_TRUE(run_until([&] { return factory_.started().size() == started_before + 2; }))
      << "pre-warmed";
  auto prewarmed = factory_.started().back();
  clock_.advance(std::chrono::seconds(54));  // the next call, ten minutes after the last
  auto next = invoke("f");
  ASSERT_TRUE(run_until([&] { return prewarmed->unanswered() == 1; }));
  prewarmed->answer_ok();
  ASSERT_TRUE(run_until([&] { return next->has_value(); }));
  EXPECT_FALSE((*next)->cold) << "served by the pre-warmed instance";
  EXPECT_EQ(factory_.started().size(), started_before + 2);
}

TEST_F(SchedulerTest, ACallForAnotherVersionRunsOnInstancesOfThatVersion) {
  deploy("f", {{"idle_timeout_s", 60}});
  deploy("f", {{"idle_timeout_s", 60}, {"memory_mb", 256}});  // version 2, active
  start();
  auto active = invoke("f");
  ASSERT_TRUE(run_until([&] { return factory_.started().size() == 1; }));
  EXPECT_EQ(factory_.started()[0]->version(), 2);
  factory_.started()[0]->answer_ok();
  ASSERT_TRUE(run_until([&] { return active->has_value(); }));

  auto old = invoke("f", "{}", 1, "stable");
  ASSERT_TRUE(run_until(
      [&] { return factory_.started().size() == 2 && factory_.started()[1]->unanswered() == 1; }));
  auto& v1 = *factory_.started()[1];
  EXPECT_EQ(v1.version(), 1);
  EXPECT_EQ(v1.calls().back()->qualifier, "stable");
  v1.answer_ok();
  ASSERT_TRUE(run_until([&] { return old->has_value(); }));
  EXPECT_EQ((*old)->kind, Kind::kOk);
  EXPECT_EQ((*old)->version, 1);
  EXPECT_EQ((*old)->memory_mb, 128) << "metered at version 1's memory";

  // Naming the active version is the active pool: its warm instance serves.
  auto named = invoke("f", "{}", 2, "2");
  ASSERT_TRUE(run_until([&] { return factory_.started()[0]->unanswered() == 1; }));
  factory_.started()[0]->answer_ok();
  ASSERT_TRUE(run_until([&] { return named->has_value(); }));
  EXPECT_EQ((*named)->version, 2);
  EXPECT_EQ(factory_.started().size(), 2u);
  EXPECT_EQ(scheduler_->instance_counts("f")["idle"], 2);

  // A deploy replaces the active version's instances, not those of a version named on purpose.
  deploy("f", {{"idle_timeout_s", 60}, {"memory_mb", 512}});
  settle();
  EXPECT_FALSE(v1.stopped());
  auto missing = invoke("f", "{}", 9, "9");
  ASSERT_TRUE(run_until([&] { return missing->has_value(); }));
  EXPECT_EQ((*missing)->kind, Kind::kNotFound);

  // Idle, it is reaped like any instance, and its pool goes with it.
  clock_.advance(std::chrono::seconds(61));
  ASSERT_TRUE(run_until([&] { return v1.stopped(); }));
  ASSERT_TRUE(run_until([&] { return scheduler_->live_instances() == 0; }));
}

TEST_F(SchedulerTest, MaxInstancesCountsEveryVersionAndIdleOnesGiveWay) {
  deploy("f", {{"max_instances", 1}});
  deploy("f", {{"max_instances", 1}, {"memory_mb", 256}});  // version 2, active
  start();
  auto active = invoke("f");
  ASSERT_TRUE(run_until(
      [&] { return factory_.started().size() == 1 && factory_.started()[0]->unanswered() == 1; }));
  auto old = invoke("f", "{}", 1, "1");
  settle();
  EXPECT_EQ(factory_.started().size(), 1u) << "the busy instance holds the function's one slot";
  factory_.started()[0]->answer_ok();
  ASSERT_TRUE(run_until([&] { return active->has_value(); }));
  // Idle now, it gives way to the call waiting for version 1.
  ASSERT_TRUE(run_until(
      [&] { return factory_.started().size() == 2 && factory_.started()[1]->unanswered() == 1; }));
  EXPECT_TRUE(factory_.started()[0]->stopped());
  EXPECT_EQ(factory_.started()[1]->version(), 1);
  factory_.started()[1]->answer_ok();
  ASSERT_TRUE(run_until([&] { return old->has_value(); }));
  EXPECT_EQ((*old)->kind, Kind::kOk);
  EXPECT_EQ((*old)->version, 1);
}

TEST_F(SchedulerTest, RemoveStopsEveryVersionsInstancesAndRefusesNewCalls) {
  deploy("f");
  deploy("f", {{"memory_mb", 256}});
  start();
  auto old = invoke("f", "{}", 1, "1");
  ASSERT_TRUE(run_until([&] { return factory_.started().size() == 1; }));
  factory_.started()[0]->answer_ok();
  ASSERT_TRUE(run_until([&] { return old->has_value(); }));
  auto active = invoke("f");  // in flight while the function is removed
  ASSERT_TRUE(run_until(
      [&] { return factory_.started().size() == 2 && factory_.started()[1]->unanswered() == 1; }));
  bool removed = false;
  const std::string name = "f";  // remove() reads it until it completes
  asio::co_spawn(io_, scheduler_->remove(name, milliseconds(1000)),
                 [&](std::exception_ptr) { removed = true; });
  auto during = invoke("f", "{}", 1, "1");
  ASSERT_TRUE(run_until([&] { return during->has_value(); }));
  EXPECT_EQ((*during)->kind, Kind::kUnavailable) << "no pool is made for a function going away";
  EXPECT_FALSE(removed);
  factory_.started()[1]->answer_ok();
  ASSERT_TRUE(run_until([&] { return removed && active->has_value(); }));
  EXPECT_EQ((*active)->kind, Kind::kOk);
  EXPECT_TRUE(factory_.started()[0]->stopped());
  EXPECT_TRUE(factory_.started()[1]->stopped());
  EXPECT_EQ(factory_.started().size(), 2u);
  EXPECT_EQ(scheduler_->live_instances(), 0u);
}

TEST_F(SchedulerTest, MinInstancesAreStartedAndNeverReaped) {
  deploy("f", {{"idle_timeout_s", 1}, {"min_instances", 2}});
  start();
  ASSERT_TRUE(run_until([&] { return factory_.started().size() == 2; }));
  clock_.advance(std::chrono::seconds(3600));
  settle();
  for (const auto& i : factory_.started()) EXPECT_FALSE(i->stopped());
}

TEST_F(SchedulerTest, CallsPastTheQueueLimitAre429) {
  deploy("f", {{"max_instances", 1}});
  SchedulerOptions options;
  options.max_queue = 1;
  start(options);
  auto running = invoke("f");
  ASSERT_TRUE(run_until(
      [&] { return !factory_.started().empty() && factory_.started()[0]->unanswered() == 1; }));
  auto queued = invoke("f");
  auto refused = invoke("f");
  ASSERT_TRUE(run_until([&] { return refused->has_value(); }));
  EXPECT_EQ((*refused)->kind, Kind::kThrottled);
  EXPECT_FALSE(queued->has_value());
  factory_.started()[0]->answer_ok();
  ASSERT_TRUE(run_until([&] { return factory_.started()[0]->unanswered() == 1; }));
  factory_.started()[0]->answer_ok();
  ASSERT_TRUE(run_until([&] { return running->has_value() && queued->has_value(); }));
  EXPECT_EQ((*queued)->kind, Kind::kOk);
}

TEST_F(SchedulerTest, AnInitErrorReachesEveryWaiter) {
  deploy("f", {{"max_instances", 1}});
  factory_.set_auto_ready(false);
  start();
  auto a = invoke("f");
  auto b = invoke("f");
  ASSERT_TRUE(run_until([&] { return factory_.started().size() == 1; }));
  settle();
  factory_.started()[0]->make_ready(Error::invalid(R"({"errorType":"SyntaxError"})"));
  ASSERT_TRUE(run_until([&] { return a->has_value() && b->has_value(); }));
  EXPECT_EQ((*a)->kind, Kind::kInitError);
  EXPECT_EQ((*b)->kind, Kind::kInitError);
  EXPECT_EQ((*a)->body, R"({"errorType":"SyntaxError"})");
  EXPECT_EQ((*a)->start_failure, StartFailure::Kind::kInitError);
}

// A pre-started worker reads a call sent behind LOAD once its handler is loaded: the first waiter
// goes to the starting instance at once, not a round trip through READY later.
TEST_F(SchedulerTest, AStartThatTakesCallsEarlyGetsTheFirstWaiterBeforeItIsReady) {
  deploy("f", {{"max_instances", 1}});
  factory_.set_auto_ready(false);
  factory_.set_early_calls(true);
  start();
  auto a = invoke("f");
  ASSERT_TRUE(run_until([&] {
    return factory_.started().size() == 1 && factory_.started()[0]->calls().size() == 1;
  }));
  auto b = invoke("f");
  settle();
  auto& instance = *factory_.started()[0];
  EXPECT_EQ(instance.calls().size(), 1u) << "concurrency 1: the second call waits its turn";
  instance.make_ready();
  settle();
  EXPECT_FALSE(a->has_value());
  instance.answer_ok();
  ASSERT_TRUE(run_until([&] { return a->has_value() && instance.calls().size() == 2; }));
  EXPECT_EQ((*a)->kind, Kind::kOk);
  EXPECT_TRUE((*a)->cold);
  EXPECT_EQ((*a)->init, milliseconds(5));
  instance.answer_ok();
  ASSERT_TRUE(run_until([&] { return b->has_value(); }));
  EXPECT_EQ((*b)->kind, Kind::kOk);
  EXPECT_EQ(factory_.started().size(), 1u);
}

// A call sent before READY to an instance that never gets there is answered with why, as the
// calls waiting for that start are, and starts nothing more.
TEST_F(SchedulerTest, ACallSentBeforeReadyGetsTheInitErrorOfItsInstance) {
  deploy("f", {{"max_instances", 1}});
  factory_.set_auto_ready(false);
  factory_.set_early_calls(true);
  start();
  auto a = invoke("f");
  auto b = invoke("f");
  ASSERT_TRUE(run_until([&] {
    return factory_.started().size() == 1 && factory_.started()[0]->calls().size() == 1;
  }));
  settle();
  factory_.started()[0]->make_ready(Error::invalid(R"({"errorType":"SyntaxError"})"));
  ASSERT_TRUE(run_until([&] { return a->has_value() && b->has_value(); }));
  for (const auto& call : {a, b}) {
    EXPECT_EQ((*call)->kind, Kind::kInitError);
    EXPECT_EQ((*call)->body, R"({"errorType":"SyntaxError"})");
    EXPECT_EQ((*call)->start_failure, StartFailure::Kind::kInitError);
  }
  settle();
  EXPECT_EQ(factory_.started().size(), 1u) << "the code fails to load: no second start";

  // An instance that ends before it is ready (not the function's error): Runtime.ExitError.
  auto c = invoke("f");
  ASSERT_TRUE(run_until([&] {
    return factory_.started().size() == 2 && factory_.started()[1]->calls().size() == 1;
  }));
  factory_.started()[1]->exit("was killed by signal 9");
  ASSERT_TRUE(run_until([&] { return c->has_value(); }));
  EXPECT_EQ((*c)->kind, Kind::kInitError);
  EXPECT_EQ((*c)->start_failure, StartFailure::Kind::kExited);
}

TEST_F(SchedulerTest, AFailedStartIsTheWaitersError) {
  deploy("f");
  factory_.set_fail_starts(true);
  start();
  auto call = invoke("f");
  ASSERT_TRUE(run_until([&] { return call->has_value(); }));
  EXPECT_EQ((*call)->kind, Kind::kInitError);
  EXPECT_NE((*call)->body.find("Runtime.StartError"), std::string::npos) << (*call)->body;
  EXPECT_EQ((*call)->start_failure, StartFailure::Kind::kNotStarted);
  EXPECT_EQ(scheduler_->spawn_failures(), 1u);
}

TEST_F(SchedulerTest, UnknownFunctionsAreNotFound) {
  start();
  auto call = invoke("nope");
  ASSERT_TRUE(run_until([&] { return call->has_value(); }));
  EXPECT_EQ((*call)->kind, Kind::kNotFound);
  EXPECT_TRUE(factory_.started().empty());
}

}  // namespace
}  // namespace ember::scheduler
