// Per-function pools of warm instances: dispatch to an idle instance (LIFO), cold-start new
// ones under load within the caps, queue callers with a deadline, reap idle instances to zero,
// keep min_instances warm, and respect a host memory budget by evicting idle instances of other
// functions. Owned by the event loop's thread: no locks; every method runs on that thread.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "ember/common/async.h"
#include "ember/common/clock.h"
#include "ember/logs/store.h"
#include "ember/registry/registry.h"
#include "ember/runtime/instance_factory.h"

namespace ember::scheduler {

struct PoolMember;
struct PoolWaiter;
struct FunctionPool;

struct SchedulerOptions {
  int max_concurrent_starts = 2;  // per function
  // Instances of one function that start as soon as calls wait; past them, only when waiting
  // would take longer than a cold start. 0: no such limit (every waiting call may start one).
  int eager_instances = 0;
  // Calls handed to a busy instance beyond its concurrency, to start as soon as it answers the
  // call ahead (see may_pipeline); 0: a call waits in the scheduler until an instance is free.
  int pipeline_depth = 4;
  int max_queue = 1000;  // waiting calls per function; more get 429
  std::chrono::milliseconds queue_timeout{10'000};
  std::chrono::milliseconds init_timeout{10'000};
  std::chrono::milliseconds stop_grace{2'000};
  std::chrono::milliseconds reap_interval{1'000};
  int64_t memory_budget_mb = 0;  // sum of memory_mb of live instances; 0: no budget
};

struct InvokeRequest {
  std::string request_id;
  std::string event_json;
  std::string kind = "invoke";  // "invoke" or "http"
  int version = 0;              // the version to run; 0: the active one
  std::string qualifier;        // what the caller named (a version or an alias), for the context
  int depth = 0;                // function-to-function calls that led to this one
};

// Why an instance meant for waiting calls did not come up.
struct StartFailure {
  enum class Kind {
    kNotStarted,  // the factory could not start it (Runtime.StartError)
    kExited,      // it ended, or did not answer in time, before READY (Runtime.ExitError)
    kInitError,   // the function's code failed to load; `detail` is its own error object
  };
  Kind kind = Kind::kNotStarted;
  std::string detail;  // what happened, or (kInitError) the function's error object as JSON
  // The error object the caller gets: {"errorType", "errorMessage", "stack"} as JSON.
  std::string error_object() const;
};

struct InvokeOutcome {
  enum class Kind {
    kOk,             // body: the value as JSON
    kFunctionError,  // body: {"errorType","errorMessage","stack"}
    kTimeout,
    kCrash,      // body: what happened to the worker; crash_cause: why it ended, if known
    kInitError,  // body: the init error object, or what happened
    kThrottled,  // queue full or queue wait over
    kNotFound,
    kUnavailable,  // the function is being removed or the daemon is stopping
  };
  Kind kind = Kind::kCrash;
  std::string body;
  std::string content_type;  // kOk: the media type of a body that is not JSON; empty for JSON
  std::optional<worker::ExitCause> crash_cause;
  std::optional<StartFailure::Kind> start_failure;  // kInitError: why no instance came up
  bool cold = false;
  int version = 0;
  std::chrono::nanoseconds init{0};
  std::chrono::nanoseconds duration{0};
  std::chrono::nanoseconds queued{0};
  int memory_mb = 0;         // the function's configured memory, for metering
  uint64_t memory_peak = 0;  // bytes, the instance's peak so far; 0 when unknown
  uint32_t kv_reads = 0;     // key-value operations the call made
  uint32_t kv_writes = 0;
};

class Scheduler {
 public:
  // Instances come from `factory`; every decision reads time from `clock` (timers only wake the
  // scheduler up to look again), so tests can drive it with a FakeClock.
  Scheduler(boost::asio::io_context& io, runtime::InstanceFactory& factory,
            registry::Registry& registry, logs::LogStore& logs, SchedulerOptions options,
            const Clock& clock = system_clock());
  ~Scheduler();

  // Starts the reaper (idle timeouts, min_instances).
  void start();
  // The event loop's executor, which every scheduler call runs on.
  boost::asio::any_io_executor executor() const { return io_.get_executor(); }

  boost::asio::awaitable<InvokeOutcome> invoke(const std::string& function, InvokeRequest request);

  // A new version is active: idle instances of older versions stop, and when the function is
  // warm, one instance of the new version starts at once, before the old ones drain.
  void on_deployed(const registry::RecordPtr& record);

  // Refuses new calls for `function`, waits for calls in flight, then stops its instances.
  boost::asio::awaitable<void> remove(const std::string& function,
                                      std::chrono::milliseconds deadline);

  // Stops every instance: SHUTDOWN, then SIGKILL after the grace period; returns once all exited.
  boost::asio::awaitable<void> shutdown();
  // Kills every instance now and refuses new calls: for when workers can no longer be
  // supervised (the spawner helper died). Calls in flight end as crashes.
  void kill_all(const std::string& reason);

  // {"starting": n, "idle": n, "busy": n, "stopping": n} for one function.
  nlohmann::json instance_counts(const std::string& function) const;
  // What the sandbox stopped since the daemon started: {"oom_kills": n,
  // "sandbox_violations": n, "pids_limit_hits": n} for one function.
  nlohmann::json sandbox_counts(const std::string& function) const;
  size_t live_instances() const;
  int64_t memory_used_mb() const { return memory_used_mb_; }
  int64_t memory_budget_mb() const { return options_.memory_budget_mb; }
  // Instances that could not be started (the process did not come up or died before READY;
  // a handler that fails to load is the function's error, not counted here).
  uint64_t spawn_failures() const { return spawn_failures_; }
  // A reloaded configuration: limits apply to the next decision.
  void set_options(SchedulerOptions options) { options_ = std::move(options); }

 private:
  using Member = PoolMember;
  using Waiter = PoolWaiter;
  using Pool = FunctionPool;

  Pool& pool_for(const std::string& function, int pinned = 0);
  // Calls `visit(Pool&)` for each pool of `function`: its main pool and its pinned ones.
  template <class F>
  void for_each_pool_of(const std::string& function, F&& visit) const;
  // Brings the pool's view of its function up to `record`; false when the version a pinned pool
  // serves is no longer there.
  bool refresh(Pool& pool, const registry::RecordPtr& record);
  std::shared_ptr<Member> acquire(Pool& pool);
  // Fills `out` with a 503 and returns true when the daemon is stopping or the function is
  // being removed.
  bool refuse_if_closing(const Pool& pool, InvokeOutcome& out) const;
  // Queues the call until an instance is handed to it; null when none comes, with `out` saying
  // why.
  boost::asio::awaitable<std::shared_ptr<Member>> wait_for_instance(Pool& pool,
                                                                    Clock::time_point queued_at,
                                                                    InvokeOutcome& out);
  void release(Pool& pool, const std::shared_ptr<Member>& member);
  void lease(Member& member);
  // Gives `member`, already leased, to the first waiter and wakes it.
  void hand_to_first_waiter(Pool& pool, std::shared_ptr<Member> member);
  void dispatch_waiters(Pool& pool);
  // Hands waiters to a starting instance that takes calls before it is ready, up to its
  // concurrency: their INVOKE follows the start instead of a round trip through READY.
  void hand_over_early(Pool& pool, const std::shared_ptr<Member>& member);
  void ensure_starts(Pool& pool);
  void ensure_starts_once(Pool& pool);
  void arm_scale_check(Pool& pool, std::chrono::nanoseconds after);
  bool reserve_memory(Pool& pool, int memory_mb);
  boost::asio::awaitable<void> start_instance(std::string key, registry::RecordPtr record,
                                              bool on_demand);
  void stop_member(Pool& pool, const std::shared_ptr<Member>& member);
  void member_exited(const std::string& key, uint64_t id);
  void fail_waiters(Pool& pool, const StartFailure& failure);
  void log_report(const std::string& function, const std::string& request_id,
                  const InvokeOutcome& out);
  void reap();
  // The hybrid keep-alive of `pool` at `now`: the idle timeout and the instances to keep warm
  // its idle times call for (unchanged while the histogram says too little).
  void apply_hybrid_keep_alive(const Pool& pool, Clock::time_point now,
                               Clock::duration& idle_timeout, int& min_instances) const;
  boost::asio::awaitable<void> reaper();

  boost::asio::io_context& io_;
  runtime::InstanceFactory& factory_;
  const Clock& clock_;
  registry::Registry& registry_;
  logs::LogStore& logs_;
  SchedulerOptions options_;
  std::map<std::string, std::unique_ptr<Pool>> pools_;  // by Pool::key
  std::set<std::string, std::less<>> removing_;         // functions remove() is draining
  size_t pinned_pools_ = 0;                             // pools of versions other than the active
  struct SandboxCounts {
    uint64_t oom_kills = 0, violations = 0, pids_limit_hits = 0;
  };
  std::map<std::string, SandboxCounts> sandbox_counts_;
  int64_t memory_used_mb_ = 0;
  uint64_t spawn_failures_ = 0;
  bool stopping_ = false;
  boost::asio::steady_timer reap_timer_;
  Event exits_;  // set whenever an instance exits
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace ember::scheduler
