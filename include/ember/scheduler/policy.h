// The scheduler's decisions as pure functions of pool state and the time, so every rule is
// tested by moving a fake clock instead of sleeping.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "ember/common/clock.h"

namespace ember::scheduler {

// What policy needs to know of one instance.
struct MemberView {
  uint64_t id = 0;
  int version = 0;
  bool starting = false;           // launched, not READY yet
  bool stopping = false;           // asked to exit; takes no calls
  int leased = 0;                  // calls in flight
  int concurrency = 1;             // calls it may take at once
  Clock::time_point idle_since{};  // when `leased` last dropped to zero
  Clock::time_point last_used{};
  int memory_mb = 0;
  std::chrono::nanoseconds running_for{0};  // how long its oldest running call has run
};

// The instance a new call should go to: a ready instance of `version` with spare capacity, the
// most recently used first (LIFO keeps the fewest instances warm, so the rest can idle out).
std::optional<size_t> pick_instance(const std::vector<MemberView>& members, int version);

// Whether a call that finds every instance busy may be handed to one of them now, to start there
// as soon as the call ahead of it answers, instead of waiting in the scheduler for a free one.
// That saves the worker a sleep and a wake-up per call, which is most of the cost of a short
// call, but the call waits behind one whose end is unknown and lines printed at the hand-over
// cannot be attributed to either call. So only when calls are short (`mean_call` under
// kPipelineMaxCall) and the function has printed nothing in its last kPipelineQuietCalls calls.
inline constexpr std::chrono::microseconds kPipelineMaxCall{1000};
inline constexpr int kPipelineQuietCalls = 16;
bool may_pipeline(int depth, std::chrono::nanoseconds mean_call, int quiet_calls);

// The busy instance a pipelined call goes to: a ready instance of `version` with fewer than
// `concurrency + depth` calls whose running call has not yet run kPipelineMaxCall (one that has
// is likely a long one, and a call queued behind it could not be taken back), the fewest calls
// first, then the one used longest ago (whose call is likely to end first).
std::optional<size_t> pick_pipelined(const std::vector<MemberView>& members, int version,
                                     int depth);

struct StartInputs {
  int waiters = 0;  // calls queued for an instance
  int max_instances = 1;
  int concurrency = 1;
  int max_concurrent_starts = 2;
  // Instances of `version` that start as soon as a call waits; past them an instance starts only
  // when waiting would cost more than starting one (see starts_needed). 0: no such limit.
  int eager_instances = 0;
  std::chrono::nanoseconds oldest_wait{0};  // how long the first queued call has waited
  std::chrono::nanoseconds mean_call{0};    // recent duration of one call; 0: none finished yet
  // What one more instance recently cost to start (runtime::Instance::start_cost): for a
  // pre-started worker, its own launch too, which its pool repeats to replace it, not only the
  // few milliseconds a caller waited for it. 0: none started yet.
  std::chrono::nanoseconds start_cost{0};
  // The share of its serving instances' busy time their processes spent blocked, neither
  // running nor waiting for a CPU; nullopt (or no function) when too little is known. Asked
  // only when the answer decides (reading it costs a read of /proc per instance).
  std::function<std::optional<double>()> blocked_share;
};

// Past eager_instances, more instances shorten a queue only for calls that mostly wait on
// something other than a CPU; below this blocked share the CPUs are what the queue waits for.
inline constexpr double kMinBlockedShare = 0.5;

// How many instances to launch now for `version`: enough that every waiter will have a slot,
// counting the capacity of instances already starting, never more than max_instances live
// instances and never more than max_concurrent_starts starting at once.
//
// Past eager_instances live or starting, a queued call is cheaper served by an instance that
// frees up than by a cold start, unless the wait is expected to outlast one: more instances than
// CPUs do not add throughput to calls that compute, they add context switches and idle memory.
// So an instance starts there only when the first waiter has already waited what a start
// costs, or when the last waiter's expected wait (queue depth over serving capacity, times the
// mean call) is longer than that and the instances' calls are blocked (on I/O, timers, other
// services) for at least kMinBlockedShare of their time: a call that computes is slow under
// load because it waits for a CPU, and another instance only adds one more waiting for it.
// Until that share is known, only the first waiter's wait starts more: in the first moments of
// a burst every call is slow (cold code, a queue that has just formed) and says little.
// With no instance serving, or no start measured yet, waiters start instances as below
// eager_instances. The cost, not the latency, is what counts: a pre-started worker answers in
// a few milliseconds, but waits of a few milliseconds are what a saturated CPU gives every call,
// and a start there takes a runtime's launch of CPU from the calls (its pool's refill) and adds
// an instance that cannot make them faster.
int starts_needed(const std::vector<MemberView>& members, int version, const StartInputs& in);

struct ReapInputs {
  int active_version = 0;
  std::chrono::seconds idle_timeout{60};
  int min_instances = 0;
};

// Idle instances to stop at `now`: those of other versions at once; those of the active version
// once idle for idle_timeout, keeping min_instances of them. Busy instances are never reaped:
// their idle clock starts only when their last call ends.
std::vector<uint64_t> idle_to_reap(const std::vector<MemberView>& members, Clock::time_point now,
                                   const ReapInputs& in);

// Instances to launch so the active version has min_instances live or starting.
int prewarm_needed(const std::vector<MemberView>& members, int active_version, int min_instances);

// The hybrid histogram keep-alive policy (Shahrad et al., "Serverless in the Wild", USENIX ATC
// 2020), per function: the idle times between its calls (from the end of the last call in
// flight to the next call's arrival) in one-minute bins up to four hours.
class IdleHistogram {
 public:
  static constexpr int kBins = 240;
  static constexpr std::chrono::minutes kBin{1};

  void add(Clock::duration idle);
  uint32_t samples() const { return samples_; }  // within the range
  uint32_t out_of_range() const { return out_of_range_; }
  const std::array<uint32_t, kBins>& bins() const { return bins_; }

 private:
  std::array<uint32_t, kBins> bins_{};
  uint32_t samples_ = 0;
  uint32_t out_of_range_ = 0;
};

// What to do once a function's last call in flight ends: unload its instances, pre-warm one
// `prewarm` later, and keep it `keep_alive` from then (prewarm 0: keep the instances keep_alive).
struct KeepAlive {
  Clock::duration prewarm{0};
  Clock::duration keep_alive{0};
  bool from_histogram = false;  // false: the fixed policy, too little known
};

// The windows from the histogram: pre-warm at the 5th percentile of the idle times less 10%,
// keep alive to their 99th percentile plus 10%. The histogram is used only once it holds enough
// idle times (10), most of them within its range, and they cluster (the coefficient of variation
// of its bins is 2 or more); otherwise the fixed policy: no pre-warm, keep alive `fixed`.
KeepAlive hybrid_keep_alive(const IdleHistogram& histogram, Clock::duration fixed);

// One idle instance anywhere, as a candidate for eviction under memory pressure.
struct EvictionCandidate {
  size_t pool = 0;
  uint64_t id = 0;
  Clock::time_point last_used{};
  int memory_mb = 0;
};

// Whether `needed_mb` fits in the budget, and if not, which idle instances to stop, least
// recently used first, to make it fit. nullopt when even stopping all of them is not enough.
std::optional<std::vector<EvictionCandidate>> plan_eviction(std::vector<EvictionCandidate> idle,
                                                            int64_t used_mb, int64_t budget_mb,
                                                            int64_t needed_mb);

}  // namespace ember::scheduler
