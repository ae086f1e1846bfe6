#include <gtest/gtest.h>

#include <chrono>

#include "ember/metering/metrics.h"
#include "ember/metering/usage.h"
#include "temp_dir.h"

namespace ember::metering {
namespace {

using namespace std::chrono_literals;
using ember::testing::TempDir;

TEST(Billing, RoundsUpToTheMillisecondAndBillsAtLeastOne) {
  EXPECT_EQ(billed_ms(0ns), 1);
  EXPECT_EQ(billed_ms(1ns), 1);
  EXPECT_EQ(billed_ms(999'999ns), 1);
  EXPECT_EQ(billed_ms(1'000'000ns), 1);
  EXPECT_EQ(billed_ms(1'000'001ns), 2);
  EXPECT_EQ(billed_ms(2'500'000ns), 3);
  EXPECT_EQ(billed_ms(15min), 900'000);
}

TEST(Outcomes, NamesRoundTrip) {
  for (Outcome o : kOutcomes) EXPECT_EQ(parse_outcome(outcome_name(o)), o);
  EXPECT_EQ(outcome_name(Outcome::kOom), "oom");
  EXPECT_FALSE(parse_outcome("Ok").has_value());
}

TEST(Billing, GbSecondsScaleWithMemory) {
  EXPECT_DOUBLE_EQ(gb_seconds(1000, 1024), 1.0);
  EXPECT_DOUBLE_EQ(gb_seconds(1, 128), 0.000125);
  EXPECT_DOUBLE_EQ(gb_seconds(0, 4096), 0.0);
}

UsageRecord call(std::string function, int64_t time_ms, int64_t billed, int memory_mb = 128,
                 Outcome outcome = Outcome::kOk, bool cold = false) {
  UsageRecord r;
  r.time_ms = time_ms;
  r.function = std::move(function);
  r.version = 1;
  r.request_id = "req-" + std::to_string(time_ms);
  r.cold = cold;
  r.outcome = outcome;
  r.duration_us = billed * 1000 - 300;
  r.billed_ms = r.outcome == Outcome::kThrottled ? 0 : billed;
  r.memory_mb = memory_mb;
  return r;
}

TEST(UsageStore, TotalsAreTheSumsOfTheRecordsPerFunction) {
  TempDir tmp;
  auto store = UsageStore::open(tmp / "usage.db", 1h, 0);
  ASSERT_TRUE(store.ok()) << store.error().message;
  (*store)->append(call("a", 1000, 3, 128, Outcome::kOk, true));
  (*store)->append(call("a", 2000, 5));
  (*store)->append(call("a", 3000, 7, 128, Outcome::kTimeout));
  (*store)->append(call("a", 3500, 0, 128, Outcome::kThrottled));
  (*store)->append(call("b", 2500, 11, 1024, Outcome::kOom));
  auto totals = (*store)->totals(0, 10'000);
  ASSERT_TRUE(totals.ok()) << totals.error().message;
  ASSERT_EQ(totals->size(), 2u);
  const FunctionUsage& a = (*totals)[0];
  EXPECT_EQ(a.function, "a");
  EXPECT_EQ(a.invocations, 3);
  EXPECT_EQ(a.errors, 1);
  EXPECT_EQ(a.throttles, 1);
  EXPECT_EQ(a.cold_starts, 1);
  EXPECT_EQ(a.billed_ms, 15);
  EXPECT_DOUBLE_EQ(a.gb_seconds(), gb_seconds(15, 128));
  const FunctionUsage& b = (*totals)[1];
  EXPECT_EQ(b.errors, 1);
  EXPECT_DOUBLE_EQ(b.gb_seconds(), gb_seconds(11, 1024));

  auto window = (*store)->totals(2000, 3000);
  ASSERT_TRUE(window.ok());
  ASSERT_EQ(window->size(), 2u);
  EXPECT_EQ((*window)[0].billed_ms, 5);  // from is inclusive, to exclusive
  auto only_b = (*store)->totals(0, 10'000, "b");
  ASSERT_TRUE(only_b.ok());
  ASSERT_EQ(only_b->size(), 1u);
  EXPECT_EQ((*only_b)[0].function, "b");
}

TEST(UsageStore, RecordsSurviveReopeningAndComeNewestFirst) {
  TempDir tmp;
  {
    auto store = UsageStore::open(tmp / "usage.db", 1h, 0);
    ASSERT_TRUE(store.ok());
    for (int i = 1; i <= 5; ++i) (*store)->append(call("f", i * 100, i));
    // No flush: the destructor commits what is buffered.
  }
  auto store = UsageStore::open(tmp / "usage.db", 1h, 0);
  ASSERT_TRUE(store.ok());
  auto totals = (*store)->totals(0, 1000);
  ASSERT_TRUE(totals.ok());
  ASSERT_EQ(totals->size(), 1u);
  EXPECT_EQ((*totals)[0].billed_ms, 15);
  auto records = (*store)->records("f", 0, 1000, 2);
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 2u);
  EXPECT_EQ((*records)[0].time_ms, 500);
  EXPECT_EQ((*records)[1].time_ms, 400);
  EXPECT_EQ((*records)[0].request_id, "req-500");
}

TEST(UsageStore, PrunesRecordsOlderThanTheRetention) {
  TempDir tmp;
  auto store = UsageStore::open(tmp / "usage.db", 1h, 2);
  ASSERT_TRUE(store.ok());
  const int64_t day = 86'400'000;
  const int64_t now = 100 * day;
  (*store)->append(call("f", now - 3 * day, 1));
  (*store)->append(call("f", now - 1 * day, 2));
  ASSERT_TRUE((*store)->flush().ok());
  auto pruned = (*store)->prune(now);
  ASSERT_TRUE(pruned.ok());
  EXPECT_EQ(*pruned, 1);
  auto t = (*store)->totals(0, now);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)[0].billed_ms, 2);
}

TEST(UsageStore, OpeningAnUnwritablePathSaysWhere) {
  auto store = UsageStore::open("/nonexistent-dir/usage.db", 1h, 0);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.error().message.find("/nonexistent-dir/usage.db"), std::string::npos)
      << store.error().message;
}

TEST(FunctionUsage, CostAppearsOnlyWithAPrice) {
  FunctionUsage u;
  u.function = "f";
  u.invocations = 2'000'000;
  u.billed_ms = 1000;
  u.mb_ms = 1000 * 2048;  // 2 GB-seconds
  EXPECT_FALSE(u.to_json(Prices{}).contains("cost"));
  auto j = u.to_json(Prices{0.5, 0.2});
  EXPECT_DOUBLE_EQ(j["gb_seconds"].get<double>(), 2.0);
  EXPECT_EQ(j["cost"]["compute"], "1.0000000000");
  EXPECT_EQ(j["cost"]["requests"], "0.4000000000");
  EXPECT_EQ(j["cost"]["total"], "1.4000000000");
}

TEST(FunctionUsage, MoneyIsARoundedDecimalThatAddsUp) {
  FunctionUsage u;
  u.function = "f";
  u.invocations = 3;
  u.mb_ms = 9 * 128;  // 0.001125 GB-seconds
  u.kv_writes = 3;
  auto j = u.to_json(Prices{0.0000166667, 0.2, 0, 1.0});
  EXPECT_EQ(j["cost"]["compute"], "0.0000000188");  // 1.875e-08, never in exponent form
  EXPECT_EQ(j["cost"]["requests"], "0.0000006000");
  EXPECT_EQ(j["cost"]["kv"], "0.0000030000");
  EXPECT_EQ(j["cost"]["total"], "0.0000036188");
}

TEST(Metrics, CountsAKnownSequenceOfCalls) {
  Metrics m;
  m.invocation({"f", Outcome::kOk, true, true, 0.1, 0.09, 0.002});
  m.invocation({"f", Outcome::kOk, false, true, 0.0001, 0, 0.001});
  m.invocation({"f", Outcome::kTimeout, false, true, 0, 0, 1.0});
  m.invocation({"f", Outcome::kThrottled, false, false, 0, 0, 0});
  m.request("invoke", 200);
  m.request("invoke", 200);
  m.request("invoke", 504);
  DaemonState state;
  state.functions.push_back({"f", 0, 1, 0, 0});
  state.memory_used_mb = 128;
  const std::string text = m.render(state);
  auto has = [&](const std::string& line) { return text.find(line + "\n") != std::string::npos; };
  EXPECT_TRUE(has(R"(ember_invocations_total{function="f",outcome="ok"} 2)")) << text;
  EXPECT_TRUE(has(R"(ember_invocations_total{function="f",outcome="timeout"} 1)"));
  EXPECT_TRUE(has(R"(ember_invocations_total{function="f",outcome="throttled"} 1)"));
  EXPECT_TRUE(has(R"(ember_cold_starts_total{function="f"} 1)"));
  // A throttled call never ran: three durations, one init.
  EXPECT_TRUE(has(R"(ember_invocation_duration_seconds_count{function="f"} 3)"));
  EXPECT_TRUE(has(R"(ember_init_duration_seconds_count{function="f"} 1)"));
  EXPECT_TRUE(has(R"(ember_http_requests_total{code="200",route="invoke"} 2)"));
  EXPECT_TRUE(has(R"(ember_instances{function="f",state="idle"} 1)"));
  EXPECT_TRUE(has("ember_memory_budget_used_bytes 134217728"));
  EXPECT_NE(text.find("process_resident_memory_bytes "), std::string::npos);

  m.forget("f");
  const std::string after = m.render(DaemonState{});
  EXPECT_EQ(after.find(R"(function="f")"), std::string::npos) << after;
}

}  // namespace
}  // namespace ember::metering
