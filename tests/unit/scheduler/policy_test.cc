#include "ember/scheduler/policy.h"

#include <gtest/gtest.h>

namespace ember::scheduler {
namespace {

using std::chrono::nanoseconds;
using std::chrono::seconds;
using namespace std::chrono_literals;

MemberView member(uint64_t id, int version = 1) {
  MemberView m;
  m.id = id;
  m.version = version;
  return m;
}

TEST(PickInstance, PrefersTheMostRecentlyUsedIdleInstance) {
  FakeClock clock;
  std::vector<MemberView> ms = {member(1), member(2), member(3)};
  ms[0].last_used = clock.now() + seconds(3);
  ms[1].last_used = clock.now() + seconds(5);
  ms[2].last_used = clock.now() + seconds(1);
  EXPECT_EQ(pick_instance(ms, 1), 1u);
  ms[1].leased = 1;
  EXPECT_EQ(pick_instance(ms, 1), 0u) << "busy instances are skipped";
}

TEST(PickInstance, SkipsStartingStoppingAndOtherVersions) {
  std::vector<MemberView> ms = {member(1), member(2), member(3, 2)};
  ms[0].starting = true;
  ms[1].stopping = true;
  EXPECT_FALSE(pick_instance(ms, 1).has_value());
  EXPECT_EQ(pick_instance(ms, 2), 2u);
}

TEST(PickInstance, ConcurrencyAllowsSeveralCallsPerInstance) {
  std::vector<MemberView> ms = {member(1)};
  ms[0].concurrency = 3;
  ms[0].leased = 2;
  EXPECT_EQ(pick_instance(ms, 1), 0u);
  ms[0].leased = 3;
  EXPECT_FALSE(pick_instance(ms, 1).has_value());
}

TEST(Pipeline, OnlyForShortQuietCallsAndAPositiveDepth) {
  EXPECT_TRUE(may_pipeline(1, 200us, kPipelineQuietCalls));
  EXPECT_FALSE(may_pipeline(0, 200us, kPipelineQuietCalls)) << "depth 0 turns it off";
  EXPECT_FALSE(may_pipeline(1, 0ns, kPipelineQuietCalls)) << "no call has finished yet";
  EXPECT_FALSE(may_pipeline(1, kPipelineMaxCall, kPipelineQuietCalls)) << "calls too long";
  EXPECT_FALSE(may_pipeline(1, 200us, kPipelineQuietCalls - 1)) << "printed lately";
}

TEST(Pipeline, PicksTheLeastLoadedBusyInstanceUsedLongestAgo) {
  FakeClock clock;
  std::vector<MemberView> ms = {member(1), member(2), member(3), member(4)};
  for (auto& m : ms) m.leased = 1;
  ms[0].last_used = clock.now() + seconds(2);
  ms[1].last_used = clock.now() + seconds(1);
  ms[2].last_used = clock.now();
  ms[2].leased = 2;  // already has one queued
  ms[3].starting = true;
  ms[3].leased = 0;
  EXPECT_EQ(pick_pipelined(ms, 1, 1), 1u);
  ms[1].leased = 2;
  EXPECT_EQ(pick_pipelined(ms, 1, 1), 0u);
  ms[0].leased = 2;
  EXPECT_FALSE(pick_pipelined(ms, 1, 1).has_value()) << "every queue is full at depth 1";
  EXPECT_EQ(pick_pipelined(ms, 1, 2), 2u) << "depth 2: the one used longest ago";
  EXPECT_FALSE(pick_pipelined(ms, 2, 2).has_value()) << "another version";
}

TEST(Pipeline, NeverBehindACallThatHasRunLong) {
  std::vector<MemberView> ms = {member(1), member(2)};
  for (auto& m : ms) m.leased = 1;
  ms[0].running_for = kPipelineMaxCall;  // probably a long call: a queued one could not leave
  ms[1].running_for = kPipelineMaxCall / 2;
  EXPECT_EQ(pick_pipelined(ms, 1, 1), 1u);
  ms[1].running_for = 2 * kPipelineMaxCall;
  EXPECT_FALSE(pick_pipelined(ms, 1, 1).has_value());
}

TEST(StartsNeeded, ABurstStartsOnlyWhatTheCapsAllow) {
  std::vector<MemberView> none;
  // 50 first calls: two starts at a time, not fifty.
  EXPECT_EQ(starts_needed(none, 1, {50, 4, 1, 2}), 2);
  std::vector<MemberView> two_starting = {member(1), member(2)};
  two_starting[0].starting = two_starting[1].starting = true;
  EXPECT_EQ(starts_needed(two_starting, 1, {50, 4, 1, 2}), 0);
  // One became ready and busy: room for one more start, still at most 4 live.
  two_starting[0].starting = false;
  two_starting[0].leased = 1;
  EXPECT_EQ(starts_needed(two_starting, 1, {49, 4, 1, 2}), 1);
  std::vector<MemberView> four = {member(1), member(2), member(3), member(4)};
  EXPECT_EQ(starts_needed(four, 1, {10, 4, 1, 2}), 0) << "max_instances reached";
}

TEST(StartsNeeded, StartingCapacityCoversWaiters) {
  std::vector<MemberView> ms = {member(1)};
  ms[0].starting = true;
  EXPECT_EQ(starts_needed(ms, 1, {1, 10, 1, 5}), 0) << "one waiter, one instance on its way";
  EXPECT_EQ(starts_needed(ms, 1, {3, 10, 1, 5}), 2);
  EXPECT_EQ(starts_needed(ms, 1, {3, 10, 4, 5}), 0) << "concurrency 4 covers 3 waiters";
  EXPECT_EQ(starts_needed({}, 1, {0, 10, 1, 5}), 0) << "no waiter, no start";
  // A call handed over to the starting instance before it is ready fills part of it.
  ms[0].leased = 1;
  EXPECT_EQ(starts_needed(ms, 1, {1, 10, 1, 5}), 1) << "the instance on its way is taken";
  EXPECT_EQ(starts_needed(ms, 1, {3, 10, 4, 5}), 0) << "three more fit beside the first";
  EXPECT_EQ(starts_needed(ms, 1, {4, 10, 4, 5}), 1);
}

TEST(StartsNeeded, OldVersionsCountAgainstMaxInstances) {
  std::vector<MemberView> ms = {member(1, 1), member(2, 1)};
  ms[0].leased = ms[1].leased = 1;
  EXPECT_EQ(starts_needed(ms, 2, {5, 3, 1, 2}), 1);
}

// Two ready instances, both busy: the state in which a queued call either waits or starts more.
std::vector<MemberView> busy(int n) {
  std::vector<MemberView> ms;
  for (int i = 1; i <= n; ++i) {
    ms.push_back(member(i));
    ms.back().leased = 1;
  }
  return ms;
}

// Inputs past eager_instances for calls that mostly wait on I/O (see the blocked share test).
StartInputs eager(int waiters, int eager_instances, nanoseconds oldest_wait, nanoseconds mean_call,
                  nanoseconds start_cost) {
  return StartInputs{waiters, 10, 1, 2, eager_instances, oldest_wait, mean_call, start_cost, [] {
                       return std::optional<double>(0.9);
                     }};
}

TEST(StartsNeeded, UpToEagerInstancesWaitersStartInstancesAtOnce) {
  EXPECT_EQ(starts_needed({}, 1, eager(50, 2, 0ms, 0ms, 0ms)), 2);
  EXPECT_EQ(starts_needed(busy(1), 1, eager(50, 2, 0ms, 100us, 80ms)), 1)
      << "below eager_instances the queue's numbers do not matter";
  EXPECT_EQ(starts_needed(busy(1), 1, eager(50, 4, 0ms, 100us, 80ms)), 2)
      << "still capped by max_concurrent_starts";
}

TEST(StartsNeeded, PastEagerInstancesShortCallsWaitForAFreeInstance) {
  // 48 queued 100 µs calls over two instances drain in 2.4 ms; a start takes 80.
  EXPECT_EQ(starts_needed(busy(2), 1, eager(48, 2, 1ms, 100us, 80ms)), 0);
  // Nothing finished yet and the first waiter is fresh: no evidence that waiting is slow.
  EXPECT_EQ(starts_needed(busy(2), 1, eager(48, 2, 1ms, 0ms, 80ms)), 0);
}

TEST(StartsNeeded, PastEagerInstancesLongCallsStartMore) {
  // Three waiters of 500 ms calls over two instances: the last waits a whole call, > 80 ms.
  EXPECT_EQ(starts_needed(busy(2), 1, eager(3, 2, 0ms, 500ms, 80ms)), 2);
  // 1000 queued 100 µs calls take 50 ms on two instances: below a start of 80 ms, they wait...
  EXPECT_EQ(starts_needed(busy(2), 1, eager(1000, 2, 0ms, 100us, 80ms)), 0);
  // ...but 2000 of them would take 100 ms.
  EXPECT_EQ(starts_needed(busy(2), 1, eager(2000, 2, 0ms, 100us, 80ms)), 2);
}

TEST(StartsNeeded, PastEagerInstancesOnlyCallsThatMostlyWaitOnOtherThingsStartMore) {
  // The last of 2000 queued 100 µs calls would wait 100 ms, more than a start: worth a start
  // only if the instances are not busy computing.
  auto in = eager(2000, 2, 0ms, 100us, 80ms);
  int asked = 0;
  double share = 0.2;
  in.blocked_share = [&]() -> std::optional<double> {
    ++asked;
    return share;
  };
  EXPECT_EQ(starts_needed(busy(2), 1, in), 0) << "calls that compute wait for a CPU";
  share = kMinBlockedShare;
  EXPECT_EQ(starts_needed(busy(2), 1, in), 2) << "calls that wait on I/O";
  in.blocked_share = [&]() -> std::optional<double> {
    ++asked;
    return std::nullopt;
  };
  EXPECT_EQ(starts_needed(busy(2), 1, in), 0)
      << "unknown: no start before the first waiter waited one";
  in.blocked_share = nullptr;
  EXPECT_EQ(starts_needed(busy(2), 1, in), 0) << "not measured at all: the same";
  EXPECT_EQ(asked, 3);
  // The share is not asked when it cannot change the answer: with no instance serving, or with
  // a short expected wait.
  in.blocked_share = [&]() -> std::optional<double> {
    ++asked;
    return std::nullopt;
  };
  EXPECT_EQ(starts_needed({}, 1, in), 2);
  auto short_queue = eager(10, 2, 0ms, 100us, 80ms);
  short_queue.blocked_share = in.blocked_share;
  EXPECT_EQ(starts_needed(busy(2), 1, short_queue), 0);
  EXPECT_EQ(asked, 3);
  // A first waiter that has waited a start's cost starts more whatever the share: the calls in
  // flight are long ones.
  auto waited = eager(4, 2, 80ms, 100us, 80ms);
  waited.blocked_share = [] { return std::optional<double>(0.0); };
  EXPECT_EQ(starts_needed(busy(2), 1, waited), 2);
}

TEST(StartsNeeded, AWaitAsLongAsAColdStartStartsMoreWhateverTheMean) {
  // The mean says calls are short, but the ones in flight are not: the first waiter has waited.
  EXPECT_EQ(starts_needed(busy(2), 1, eager(4, 2, 79ms, 100us, 80ms)), 0);
  EXPECT_EQ(starts_needed(busy(2), 1, eager(4, 2, 80ms, 100us, 80ms)), 2);
  EXPECT_EQ(starts_needed(busy(9), 1, eager(4, 2, 80ms, 100us, 80ms)), 1) << "max_instances 10";
}

TEST(StartsNeeded, WithoutAServingInstanceOrAColdStartTimeWaitersStartInstances) {
  std::vector<MemberView> starting = {member(1), member(2)};
  starting[0].starting = starting[1].starting = true;
  EXPECT_EQ(starts_needed(starting, 1, eager(50, 1, 0ms, 0ms, 0ms)), 0)
      << "max_concurrent_starts already starting";
  EXPECT_EQ(starts_needed(busy(2), 1, eager(50, 1, 0ms, 100us, 0ms)), 2)
      << "no start measured yet: nothing to compare a wait with";
  auto other_version = busy(2);
  for (auto& m : other_version) m.version = 2;
  EXPECT_EQ(starts_needed(other_version, 1, eager(50, 1, 0ms, 100us, 80ms)), 2)
      << "instances of another version serve none of these waiters: nothing frees up for them";
}

TEST(IdleToReap, ReapsAfterTheIdleTimeoutOnly) {
  FakeClock clock;
  std::vector<MemberView> ms = {member(1), member(2)};
  ms[0].idle_since = clock.now();
  ms[1].idle_since = clock.now() + seconds(20);
  ReapInputs in{1, seconds(30), 0};
  clock.advance(seconds(29));
  EXPECT_TRUE(idle_to_reap(ms, clock.now(), in).empty());
  clock.advance(seconds(1));
  EXPECT_EQ(idle_to_reap(ms, clock.now(), in), std::vector<uint64_t>{1});
  clock.advance(seconds(20));
  EXPECT_EQ(idle_to_reap(ms, clock.now(), in), (std::vector<uint64_t>{1, 2}));
}

TEST(IdleToReap, ABusyInstanceIsNeverReapedHoweverLongItRuns) {
  FakeClock clock;
  std::vector<MemberView> ms = {member(1)};
  ms[0].leased = 1;
  ms[0].idle_since = clock.now();
  clock.advance(seconds(3600));
  EXPECT_TRUE(idle_to_reap(ms, clock.now(), {1, seconds(1), 0}).empty());
  // The call ends now: the idle clock starts from here, not from when it was leased.
  ms[0].leased = 0;
  ms[0].idle_since = clock.now();
  clock.advance(seconds(1) - std::chrono::milliseconds(1));
  EXPECT_TRUE(idle_to_reap(ms, clock.now(), {1, seconds(1), 0}).empty());
}

TEST(IdleToReap, KeepsMinInstancesAndDropsOldVersionsAtOnce) {
  FakeClock clock;
  std::vector<MemberView> ms = {member(1, 1), member(2, 2), member(3, 2), member(4, 2)};
  for (auto& m : ms) m.idle_since = clock.now();
  ms[3].idle_since = clock.now() + seconds(5);
  ReapInputs in{2, seconds(10), 2};
  EXPECT_EQ(idle_to_reap(ms, clock.now(), in), std::vector<uint64_t>{1}) << "old version goes";
  clock.advance(seconds(60));
  auto reaped = idle_to_reap(ms, clock.now(), in);
  EXPECT_EQ(reaped, (std::vector<uint64_t>{1, 2})) << "the longest idle goes; two stay";
}

TEST(Prewarm, FillsUpToMinInstances) {
  std::vector<MemberView> ms = {member(1, 2)};
  EXPECT_EQ(prewarm_needed(ms, 2, 3), 2);
  EXPECT_EQ(prewarm_needed(ms, 3, 1), 1) << "other versions do not count";
  EXPECT_EQ(prewarm_needed(ms, 2, 0), 0);
}

TEST(Eviction, LeastRecentlyUsedGoFirst) {
  FakeClock clock;
  std::vector<EvictionCandidate> idle = {{0, 1, clock.now() + seconds(5), 256},
                                         {1, 2, clock.now() + seconds(1), 128},
                                         {2, 3, clock.now() + seconds(3), 128}};
  auto fits = plan_eviction(idle, 512, 1024, 256);
  ASSERT_TRUE(fits.has_value());
  EXPECT_TRUE(fits->empty());
  auto plan = plan_eviction(idle, 1024, 1024, 200);
  ASSERT_TRUE(plan.has_value());
  ASSERT_EQ(plan->size(), 2u);
  EXPECT_EQ((*plan)[0].id, 2u);
  EXPECT_EQ((*plan)[1].id, 3u);
  EXPECT_FALSE(plan_eviction(idle, 1024, 1024, 1000).has_value()) << "cannot fit at all";
}

TEST(HybridKeepAlive, TooLittleKnownKeepsTheFixedPolicy) {
  using std::chrono::minutes;
  IdleHistogram h;
  for (int i = 0; i < 9; ++i) h.add(minutes(10));
  auto k = hybrid_keep_alive(h, std::chrono::seconds(60));
  EXPECT_FALSE(k.from_histogram) << "nine idle times are not enough";
  EXPECT_EQ(k.keep_alive, std::chrono::seconds(60));
  EXPECT_EQ(k.prewarm, Clock::duration(0));
  // Idle times spread evenly over the range: the bins vary too little to predict anything.
  IdleHistogram spread;
  for (int i = 0; i < IdleHistogram::kBins; ++i) spread.add(minutes(i));
  EXPECT_FALSE(hybrid_keep_alive(spread, std::chrono::seconds(60)).from_histogram);
  // Most idle times past four hours: out of the histogram's range.
  IdleHistogram rare;
  for (int i = 0; i < 10; ++i) rare.add(minutes(10));
  for (int i = 0; i < 11; ++i) rare.add(std::chrono::hours(5));
  EXPECT_EQ(rare.out_of_range(), 11u);
  EXPECT_FALSE(hybrid_keep_alive(rare, std::chrono::seconds(60)).from_histogram);
}

TEST(HybridKeepAlive, ClusteredIdleTimesGiveAPrewarmAndAKeepAliveWindow) {
  using std::chrono::minutes;
  IdleHistogram h;
  for (int i = 0; i < 20; ++i) h.add(minutes(10) + std::chrono::seconds(i));
  auto k = hybrid_keep_alive(h, std::chrono::seconds(60));
  ASSERT_TRUE(k.from_histogram);
  EXPECT_EQ(k.prewarm, std::chrono::duration_cast<Clock::duration>(minutes(9)));
  EXPECT_EQ(k.prewarm + k.keep_alive,
            std::chrono::duration_cast<Clock::duration>(std::chrono::seconds(726)));
  // Calls back to back (idle under a minute): no pre-warm, kept past the 99th percentile.
  IdleHistogram busy;
  for (int i = 0; i < 50; ++i) busy.add(std::chrono::seconds(5));
  auto b = hybrid_keep_alive(busy, std::chrono::seconds(600));
  ASSERT_TRUE(b.from_histogram);
  EXPECT_EQ(b.prewarm, Clock::duration(0));
  EXPECT_EQ(b.keep_alive, std::chrono::duration_cast<Clock::duration>(std::chrono::seconds(66)));
}

}  // namespace
}  // namespace ember::scheduler
