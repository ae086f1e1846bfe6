// The seam between the scheduler and whatever makes instances of a function. The scheduler
// decides when an instance starts, takes calls or stops; an InstanceFactory decides how one is
// made: a cold start of a sandboxed process today (cold_start.h), pre-initialised runtimes and
// the Lambda `provided` runtime behind the same interface later. Tests give the scheduler a fake.
// Everything here runs on the event loop's thread.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "ember/common/clock.h"
#include "ember/common/result.h"
#include "ember/os/cgroup.h"
#include "ember/os/proc_stats.h"
#include "ember/registry/registry.h"
#include "ember/worker/call.h"

namespace ember::runtime {

// One instance of one function version, as the scheduler drives it.
class Instance {
 public:
  virtual ~Instance() = default;

  // Completes once the instance can take calls, or with why it cannot: an error the function's
  // code raised while loading is Errc::kInvalid with the error object (JSON) as its message.
  virtual boost::asio::awaitable<Status> ready(std::chrono::milliseconds timeout) = 0;
  // Whether call() may come before ready() has completed: the instance then holds the call
  // and starts it (its timeout with it) once ready; if it never becomes ready, the call ends
  // kNotStarted and ready() says why.
  virtual bool takes_calls_before_ready() const { return false; }
  // Runs one call (see worker::Instance::call for the strings' lifetime and the timeout).
  virtual boost::asio::awaitable<worker::CallResult> call(const std::string& request_id,
                                                          const std::string& event_json,
                                                          worker::CallTags tags,
                                                          std::chrono::nanoseconds timeout,
                                                          int64_t deadline_wall_ms) = 0;
  // Asks the instance to end, killing it after `grace`; kill() ends it now.
  virtual void stop(std::chrono::milliseconds grace) = 0;
  virtual void kill(std::string reason) = 0;

  // False once it was killed or ended: it must get no further calls.
  virtual bool usable() const = 0;
  // When the oldest call running now started; nullopt when none runs.
  virtual std::optional<Clock::time_point> running_since() const = 0;
  // From the start to READY: what a caller waiting for this instance waited.
  virtual std::chrono::nanoseconds init_duration() const = 0;
  // What starting it cost the host: init_duration, plus whatever was spent ahead of demand and
  // will be spent again to replace it (the launch of a pre-started worker).
  virtual std::chrono::nanoseconds start_cost() const { return init_duration(); }
  // Why it ended, in words and as a cause, once it has.
  virtual const std::string& exit_reason() const = 0;
  virtual worker::ExitCause exit_cause() const = 0;
  // What the kernel counted in its cgroup, read when it ended; its peak memory so far (0 when
  // unknown).
  virtual const os::CgroupEvents& events() const = 0;
  virtual uint64_t memory_peak() const = 0;
  // The time its processes' main threads have spent so far running and waiting for a CPU
  // (os::sched_times); nullopt when unknown.
  virtual std::optional<os::SchedTimes> sched_times() const { return std::nullopt; }
  // Called once, when it has ended and every call on it has its result.
  virtual void on_exit(std::function<void()> callback) = 0;
};

class InstanceFactory {
 public:
  virtual ~InstanceFactory() = default;
  // Starts an instance of `record`'s active version; its output lines go to `log`. Errors are
  // what prevented the start (the instance may still fail later, through ready()).
  virtual Result<std::shared_ptr<Instance>> start(const registry::FunctionRecord& record,
                                                  worker::LogSink log) = 0;
  // The function is gone: whatever was kept for it (network namespace, uid) is released.
  virtual void forget(const std::string& function) = 0;
  // A version of `record` was deployed: what its starts will need is made ahead, in the
  // background (python bytecode).
  virtual void prepare(const registry::FunctionRecord& /*record*/) {}
  // Memory the factory holds for instances to come (pre-started workers), counted in the
  // scheduler's memory budget.
  virtual int64_t reserved_memory_mb() const { return 0; }
};

}  // namespace ember::runtime
