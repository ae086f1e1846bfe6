// The scheduler's per-function state: a pool of instances and its queue of waiting calls.
// Private to the scheduler module; the policy over these is policy.h.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ember/common/async.h"
#include "ember/common/clock.h"
#include "ember/registry/registry.h"
#include "ember/runtime/instance_factory.h"
#include "ember/scheduler/policy.h"

namespace ember::scheduler {

// One instance in a pool, with what the scheduler knows of it.
struct PoolMember {
  uint64_t id = 0;
  std::shared_ptr<runtime::Instance> instance;
  int version = 0;
  int concurrency = 1;
  int memory_mb = 0;
  bool starting = true;
  bool stopping = false;
  bool counted = true;     // memory_mb is part of memory_used_mb_
  bool on_demand = false;  // started because calls were waiting
  bool fresh = true;       // has served no call yet
  int leased = 0;
  Clock::time_point idle_since{};
  Clock::time_point last_used{};
  // For the blocked share (StartInputs::blocked_share): the instance's sched_times when it
  // became ready, and the time its calls have run since.
  std::optional<os::SchedTimes> sched_at_ready;
  std::chrono::nanoseconds busy{0};
};

// A call queued until an instance is handed to it.
struct PoolWaiter {
  boost::asio::steady_timer timer;
  Clock::time_point queued_at;
  std::shared_ptr<PoolMember> member;  // the instance handed over, already leased
  std::optional<StartFailure> error;   // set when the instance meant for it failed to start
};

// One function's instances of one version, its queue of waiting calls, and what its recent calls
// taught the scheduler. A function's main pool follows its active version; a pinned pool serves
// calls that named another version (directly or through an alias) and goes once it is empty.
// Owned by the Scheduler, on the event loop's thread.
struct FunctionPool {
  FunctionPool(boost::asio::io_context& io, std::string k, std::string n, int pinned_version)
      : key(std::move(k)),
        name(std::move(n)),
        pinned(pinned_version),
        calls(io.get_executor()),
        scale_check(io) {}
  std::string key;   // in Scheduler::pools_: the name, or NAME#VERSION for a pinned pool
  std::string name;  // the function's
  int pinned = 0;    // the version a pinned pool serves; 0 for the main pool
  // The function's record as this pool sees it: for a pinned pool, a copy whose active version
  // is the pinned one, so that every decision below reads one "active" version.
  registry::RecordPtr record;
  registry::RecordPtr source;  // the registry's record `record` was made from
  std::vector<std::shared_ptr<PoolMember>> members;
  std::deque<PoolWaiter*> waiters;
  bool removing = false;
  TaskGroup calls;  // invoke() coroutines holding this pool
  // Moving averages that decide whether a queued call should wait or start an instance.
  std::chrono::nanoseconds mean_call{0};
  std::chrono::nanoseconds start_cost{0};  // see StartInputs::start_cost
  // StartInputs::blocked_share as last measured, and when.
  std::optional<double> blocked_share;
  std::optional<Clock::time_point> blocked_share_at;
  int quiet_calls = 0;  // calls in a row during which the function printed nothing
  // For the hybrid keep-alive: when the last call in flight ended (none in flight since), and
  // the idle times seen between calls.
  std::optional<Clock::time_point> idle_since;
  IdleHistogram idle_times;
  // Runs ensure_starts again when the first waiter will have waited what a start costs.
  boost::asio::steady_timer scale_check;
  bool scale_check_armed = false;
  bool ensuring = false, ensure_again = false;  // see Scheduler::ensure_starts

  // The members as the policy sees them, in `members` order. Asked for on every call, so the
  // vector is reused: what it returns is valid until the next views().
  std::vector<MemberView>& views() const {
    view_scratch.clear();
    for (const auto& m : members) {
      view_scratch.push_back(MemberView{m->id, m->version, m->starting, m->stopping, m->leased,
                                        m->concurrency, m->idle_since, m->last_used, m->memory_mb});
    }
    return view_scratch;
  }
  mutable std::vector<MemberView> view_scratch;
  std::shared_ptr<PoolMember> find(uint64_t id) const {
    for (const auto& m : members) {
      if (m->id == id) return m;
    }
    return nullptr;
  }
};

}  // namespace ember::scheduler
