#include "ember/scheduler/scheduler.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "ember/common/async.h"
#include "ember/logs/lambda_lines.h"
#include "ember/metering/usage.h"
#include "ember/scheduler/policy.h"
#include "function_pool.h"

namespace ember::scheduler {

namespace asio = boost::asio;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

const auto log_exception = log_escaped("scheduler: task");

// An exponential moving average over about the last eight samples; the first sample seeds it.
std::chrono::nanoseconds moving_average(std::chrono::nanoseconds average,
                                        std::chrono::nanoseconds sample) {
  if (average.count() <= 0) return sample;
  return average + (sample - average) / 8;
}

// Why an instance did not become ready: an init error is the worker's own error object (as
// JSON); anything else is described by the message.
StartFailure start_failure_of(const Error& not_ready) {
  return StartFailure{not_ready.code == Errc::kInvalid ? StartFailure::Kind::kInitError
                                                       : StartFailure::Kind::kExited,
                      not_ready.message};
}

std::string error_json(std::string_view type, std::string_view message) {
  return json{{"errorType", type}, {"errorMessage", message}, {"stack", json::array()}}.dump();
}

// The share of their busy time `pool`'s serving instances spent blocked (StartInputs::
// blocked_share), measured since each became ready, at most every kBlockedShareEvery: a queue
// that keeps asking under load reads /proc ten times a second, not once per call.
constexpr std::chrono::milliseconds kBlockedShareEvery{100};
constexpr std::chrono::milliseconds kBlockedShareMinBusy{10};  // less is too little to judge

std::optional<double> blocked_share(FunctionPool& pool, Clock::time_point now) {
  if (pool.blocked_share_at && now - *pool.blocked_share_at < kBlockedShareEvery) {
    return pool.blocked_share;
  }
  std::chrono::nanoseconds busy{0}, ran{0};
  for (const auto& m : pool.members) {
    if (m->starting || m->stopping || !m->sched_at_ready || m->busy.count() <= 0) continue;
    const auto times = m->instance->sched_times();
    if (!times) continue;
    busy += m->busy;
    ran += (times->on_cpu - m->sched_at_ready->on_cpu) +
           (times->waiting_for_cpu - m->sched_at_ready->waiting_for_cpu);
  }
  pool.blocked_share_at = now;
  pool.blocked_share.reset();
  if (busy >= kBlockedShareMinBusy) {
    pool.blocked_share =
        1.0 - std::min(1.0, static_cast<double>(ran.count()) / static_cast<double>(busy.count()));
  }
  return pool.blocked_share;
}

}  // namespace

std::string StartFailure::error_object() const {
  switch (kind) {
    case Kind::kInitError:
      return detail;
    case Kind::kExited:
      return error_json(worker::error_type(worker::ExitCause::kExited), detail);
    case Kind::kNotStarted:
      break;
  }
  return error_json("Runtime.StartError", detail);
}

namespace {
uint64_t g_next_member = 1;
}

Scheduler::Scheduler(asio::io_context& io, runtime::InstanceFactory& factory,
                     registry::Registry& registry, logs::LogStore& logs, SchedulerOptions options,
                     const Clock& clock)
    : io_(io),
      factory_(factory),
      clock_(clock),
      registry_(registry),
      logs_(logs),
      options_(std::move(options)),
      reap_timer_(io),
      exits_(io.get_executor()) {}

Scheduler::~Scheduler() { *alive_ = false; }

void Scheduler::start() { asio::co_spawn(io_, reaper(), log_exception); }

template <class F>
void Scheduler::for_each_pool_of(const std::string& function, F&& visit) const {
  // A function's pools are next to each other in pools_: NAME, then NAME#VERSION ('#' sorts
  // before every character a name may hold).
  for (auto it = pools_.lower_bound(function); it != pools_.end(); ++it) {
    const std::string& key = it->first;
    if (key.size() < function.size() || key.compare(0, function.size(), function) != 0) break;
    if (key.size() > function.size() && key[function.size()] != '#') break;
    visit(*it->second);
  }
}

Scheduler::Pool& Scheduler::pool_for(const std::string& function, int pinned) {
  std::string key = pinned > 0 ? fmt::format("{}#{}", function, pinned) : function;
  auto& slot = pools_[key];
  if (!slot) {
    slot = std::make_unique<Pool>(io_, std::move(key), function, pinned);
    if (pinned > 0) ++pinned_pools_;
  }
  return *slot;
}

bool Scheduler::refresh(Pool& pool, const registry::RecordPtr& record) {
  if (pool.source == record) return true;
  registry::RecordPtr view = record;
  if (pool.pinned > 0) {
    if (!record->find(pool.pinned)) return false;  // the version is gone
    auto copy = std::make_shared<registry::FunctionRecord>(*record);
    copy->active_version = pool.pinned;
    view = std::move(copy);
  }
  pool.source = record;
  const bool new_version = !pool.record || pool.record->active_version != view->active_version;
  pool.record = std::move(view);
  if (!new_version) return true;
  for (const auto& m : std::vector(pool.members)) {
    if (m->version != pool.record->active_version && m->leased == 0 && !m->starting) {
      stop_member(pool, m);
    }
  }
  return true;
}

std::shared_ptr<Scheduler::Member> Scheduler::acquire(Pool& pool) {
  auto& views = pool.views();
  auto index = pick_instance(views, pool.record->active_version);
  if (!index && may_pipeline(options_.pipeline_depth, pool.mean_call, pool.quiet_calls)) {
    // Only a busy instance's running time matters here, so it is read only here.
    const auto steady_now = clock_.now();
    for (size_t i = 0; i < views.size(); ++i) {
      const auto& instance = pool.members[i]->instance;
      if (auto since = instance ? instance->running_since() : std::nullopt) {
        views[i].running_for = steady_now - *since;
      }
    }
    index = pick_pipelined(views, pool.record->active_version, options_.pipeline_depth);
  }
  if (!index) return nullptr;
  auto m = pool.members[*index];
  lease(*m);
  return m;
}

void Scheduler::lease(Member& m) {
  ++m.leased;
  m.last_used = clock_.now();
}

void Scheduler::hand_to_first_waiter(Pool& pool, std::shared_ptr<Member> m) {
  Waiter* w = pool.waiters.front();
  pool.waiters.pop_front();
  w->member = std::move(m);
  w->timer.cancel();
}

void Scheduler::release(Pool& pool, const std::shared_ptr<Member>& m) {
  --m->leased;
  m->last_used = clock_.now();
  // A worker killed by a timeout or crashed mid-call takes no further calls; the next caller
  // gets a fresh instance.
  if (!m->instance->usable()) stop_member(pool, m);
  if (m->leased == 0) {
    m->idle_since = m->last_used;
    if (pool.record && m->version != pool.record->active_version) stop_member(pool, m);
  }
  dispatch_waiters(pool);
  // An instance that went idle may give way to calls waiting for another version of the
  // function at max_instances (ensure_starts).
  if (pinned_pools_ > 0 && m->leased == 0 && pool.waiters.empty()) {
    for_each_pool_of(pool.name, [&](Pool& other) {
      if (&other != &pool && !other.waiters.empty()) ensure_starts(other);
    });
  }
}

void Scheduler::dispatch_waiters(Pool& pool) {
  while (!pool.waiters.empty()) {
    auto m = acquire(pool);
    if (!m) break;
    hand_to_first_waiter(pool, std::move(m));
  }
  if (!pool.waiters.empty()) ensure_starts(pool);
}

void Scheduler::hand_over_early(Pool& pool, const std::shared_ptr<Member>& m) {
  if (!pool.record || m->version != pool.record->active_version || m->stopping) return;
  while (!pool.waiters.empty() && m->leased < m->concurrency) {
    lease(*m);
    hand_to_first_waiter(pool, m);
  }
}

void Scheduler::ensure_starts(Pool& pool) {
  // A start may complete inside the loop below (an instance ready at once hands itself to the
  // waiters, which asks again): that inner ask waits for the loop, so no decision is made on a
  // count of instances that is about to change.
  if (pool.ensuring) {
    pool.ensure_again = true;
    return;
  }
  pool.ensuring = true;
  do {
    pool.ensure_again = false;
    ensure_starts_once(pool);
  } while (pool.ensure_again);
  pool.ensuring = false;
}

void Scheduler::ensure_starts_once(Pool& pool) {
  if (stopping_ || pool.removing || !pool.record) return;
  const auto& config = pool.record->active().config;
  const auto oldest_wait = pool.waiters.empty() ? std::chrono::nanoseconds(0)
                                                : clock_.now() - pool.waiters.front()->queued_at;
  // max_instances is the function's, whichever of its versions the instances run; idle
  // instances of its other versions give way.
  int elsewhere = 0;
  std::vector<std::pair<Pool*, std::shared_ptr<Member>>> idle_elsewhere;
  for_each_pool_of(pool.name, [&](Pool& other) {
    if (&other == &pool) return;
    for (const auto& m : other.members) {
      if (m->stopping) continue;
      ++elsewhere;
      if (!m->starting && m->leased == 0) idle_elsewhere.emplace_back(&other, m);
    }
  });
  const int room = config.max_instances - elsewhere;
  const int max_instances = std::max(0, room + static_cast<int>(idle_elsewhere.size()));
  int n = starts_needed(
      pool.views(), pool.record->active_version,
      StartInputs{static_cast<int>(pool.waiters.size()), max_instances, config.concurrency,
                  options_.max_concurrent_starts, options_.eager_instances, oldest_wait,
                  pool.mean_call, pool.start_cost,
                  [&pool, now = clock_.now()] { return blocked_share(pool, now); }});
  int live_here = 0;
  for (const auto& m : pool.members) live_here += m->stopping ? 0 : 1;
  const int over = n - std::max(0, room - live_here);
  for (int i = 0; i < over && i < static_cast<int>(idle_elsewhere.size()); ++i) {
    stop_member(*idle_elsewhere[i].first, idle_elsewhere[i].second);
  }
  for (int i = 0; i < n; ++i) {
    if (!reserve_memory(pool, config.memory_mb)) break;
    asio::co_spawn(io_, start_instance(pool.key, pool.record, /*on_demand=*/true), log_exception);
  }
  // Held back because an instance should free up before a new one would pay for its start: look
  // again when the first waiter has waited that long, in case the calls in flight run long.
  if (n == 0 && !pool.waiters.empty() && options_.eager_instances > 0 &&
      pool.start_cost > oldest_wait) {
    arm_scale_check(pool, pool.start_cost - oldest_wait);
  }
}

void Scheduler::arm_scale_check(Pool& pool, std::chrono::nanoseconds after) {
  if (pool.scale_check_armed) return;
  pool.scale_check_armed = true;
  pool.scale_check.expires_after(after);
  pool.scale_check.async_wait(
      [this, alive = std::weak_ptr<bool>(alive_), key = pool.key](boost::system::error_code ec) {
        auto a = alive.lock();
        if (ec || !a || !*a) return;  // the pool or the scheduler is gone
        auto it = pools_.find(key);
        if (it == pools_.end()) return;
        it->second->scale_check_armed = false;
        if (!it->second->waiters.empty()) ensure_starts(*it->second);
      });
}

bool Scheduler::reserve_memory(Pool& pool, int memory_mb) {
  // Workers the factory keeps ready for cold starts count against the budget too.
  const int64_t used = memory_used_mb_ + factory_.reserved_memory_mb();
  if (options_.memory_budget_mb > 0 && used + memory_mb > options_.memory_budget_mb) {
    std::vector<EvictionCandidate> idle;
    std::vector<Pool*> owners;
    for (auto& [_, p] : pools_) {
      for (const auto& m : p->members) {
        if (m->starting || m->stopping || m->leased > 0) continue;
        idle.push_back({owners.size(), m->id, m->last_used, m->memory_mb});
        owners.push_back(p.get());
      }
    }
    auto plan = plan_eviction(idle, used, options_.memory_budget_mb, memory_mb);
    if (!plan) return false;
    for (const auto& victim : *plan) {
      Pool& owner = *owners[victim.pool];
      spdlog::info("scheduler: [fn={}] evicting an idle instance to make room for {}", owner.name,
                   pool.name);
      stop_member(owner, owner.find(victim.id));
    }
  }
  memory_used_mb_ += memory_mb;
  return true;
}

asio::awaitable<void> Scheduler::start_instance(std::string key, registry::RecordPtr record,
                                                bool on_demand) {
  const std::string& name = record->name;
  auto member = std::make_shared<Member>();
  const auto& config = record->active().config;
  member->id = g_next_member++;
  member->version = record->active_version;
  member->concurrency = config.concurrency;
  member->memory_mb = config.memory_mb;
  member->on_demand = on_demand;
  pools_.at(key)->members.push_back(member);

  auto instance = factory_.start(
      *record, [store = &logs_, clock = &clock_, name](std::string_view stream,
                                                       std::string_view request, std::string text) {
        store->ring(name).append(logs::LogLine{0, clock->wall_ms(), std::string(stream),
                                               std::string(request), std::move(text)});
      });
  if (!instance) {
    ++spawn_failures_;
    spdlog::error("scheduler: [fn={}] cannot start an instance: {}", name,
                  instance.error().message);
    Pool& pool = *pools_.at(key);
    stop_member(pool, member);
    std::erase(pool.members, member);
    fail_waiters(pool, StartFailure{StartFailure::Kind::kNotStarted, instance.error().message});
    co_return;
  }
  member->instance = *instance;
  (*instance)->on_exit([this, alive = std::weak_ptr<bool>(alive_), key, id = member->id] {
    if (auto a = alive.lock(); a && *a) member_exited(key, id);
  });

  if ((*instance)->takes_calls_before_ready()) hand_over_early(*pools_.at(key), member);

  Status ready = co_await (*instance)->ready(options_.init_timeout);
  auto it = pools_.find(key);
  if (it == pools_.end()) {
    (*instance)->kill("its function was removed");
    co_return;
  }
  Pool& pool = *it->second;
  if (!ready) {
    const StartFailure failure = start_failure_of(ready.error());
    if (failure.kind != StartFailure::Kind::kInitError) ++spawn_failures_;
    logs_.ring(name).append(
        logs::LogLine{0, clock_.wall_ms(), "ember", "", "init failed: " + failure.error_object()});
    stop_member(pool, member);
    fail_waiters(pool, failure);
    co_return;
  }
  member->starting = false;
  member->sched_at_ready = (*instance)->sched_times();
  member->idle_since = member->last_used = clock_.now();
  pool.start_cost = moving_average(pool.start_cost, (*instance)->start_cost());
  spdlog::debug("scheduler: [fn={} inst={}] ready in {} ms", name, member->id,
                std::chrono::duration_cast<milliseconds>((*instance)->init_duration()).count());
  if (member->stopping) co_return;
  if (!pool.record || member->version != pool.record->active_version || pool.removing) {
    stop_member(pool, member);
    co_return;
  }
  dispatch_waiters(pool);
}

void Scheduler::stop_member(Pool& pool, const std::shared_ptr<Member>& m) {
  (void)pool;
  if (!m || m->stopping) return;
  m->stopping = true;
  if (m->counted) {
    memory_used_mb_ -= m->memory_mb;
    m->counted = false;
  }
  if (m->instance) m->instance->stop(options_.stop_grace);
}

void Scheduler::member_exited(const std::string& key, uint64_t id) {
  exits_.set();
  auto it = pools_.find(key);
  if (it == pools_.end()) return;
  Pool& pool = *it->second;
  const std::string& name = pool.name;
  auto m = pool.find(id);
  if (!m) return;
  const auto& events = m->instance->events();
  auto& counts = sandbox_counts_[name];
  counts.pids_limit_hits += events.pids_limited;
  if (m->instance->exit_cause() == worker::ExitCause::kOutOfMemory) ++counts.oom_kills;
  if (m->instance->exit_cause() == worker::ExitCause::kSandboxViolation) ++counts.violations;
  if (!m->stopping) {
    logs_.ring(name).append(
        logs::LogLine{0, clock_.wall_ms(), "ember", "",
                      "instance " + std::to_string(id) + " " + m->instance->exit_reason()});
  }
  if (m->counted) {
    memory_used_mb_ -= m->memory_mb;
    m->counted = false;
  }
  m->stopping = true;
  std::erase(pool.members, m);
  // Room was made: calls waiting here or elsewhere (for memory) may start instances now.
  for (auto& [_, p] : pools_) {
    if (!p->waiters.empty()) dispatch_waiters(*p);
  }
}

void Scheduler::fail_waiters(Pool& pool, const StartFailure& failure) {
  // Loading the same code again would fail the same way: every waiter gets the error.
  while (!pool.waiters.empty()) {
    Waiter* w = pool.waiters.front();
    pool.waiters.pop_front();
    w->error = failure;
    w->timer.cancel();
  }
}

asio::awaitable<InvokeOutcome> Scheduler::invoke(const std::string& function,
                                                 InvokeRequest request) {
  InvokeOutcome out;
  auto found = registry_.get(function);
  if (!found) {
    out.kind = InvokeOutcome::Kind::kNotFound;
    out.body = "function " + function + " does not exist";
    co_return out;
  }
  if (request.version > 0 && !found->find(request.version)) {
    out.kind = InvokeOutcome::Kind::kNotFound;
    out.body = fmt::format("function {} has no version {}", function, request.version);
    co_return out;
  }
  if (removing_.contains(function)) {
    out.kind = InvokeOutcome::Kind::kUnavailable;
    out.body = "the function is being removed";
    co_return out;
  }
  // The active version is served by the main pool, whichever way the caller named it.
  const int pinned = request.version == found->active_version ? 0 : request.version;
  Pool& pool = pool_for(function, pinned);
  if (refuse_if_closing(pool, out)) co_return out;
  refresh(pool, found);
  // The pool's view, kept alive here: a deploy during the call may replace pool.record.
  const registry::RecordPtr record = pool.record;
  const auto& config = record->active().config;
  const auto in_flight = pool.calls.join();
  // An idle time of the function ends: the hybrid keep-alive learns from it. Another begins
  // when the last call in flight leaves, whichever way it leaves.
  if (pool.calls.size() == 1 && pool.idle_since) {
    pool.idle_times.add(clock_.now() - *pool.idle_since);
    pool.idle_since.reset();
  }
  struct IdleFrom {
    Pool& pool;
    const Clock& clock;
    ~IdleFrom() {
      if (pool.calls.size() == 1) pool.idle_since = clock.now();
    }
  } idle_from{pool, clock_};

  const auto queued_at = clock_.now();
  const auto timeout = milliseconds(config.timeout_ms);
  const std::string& request_id = request.request_id;
  auto& log = logs_.ring(function);
  std::shared_ptr<Member> member;
  worker::CallResult result;
  // A call queued at an instance that ended before its turn never reached the handler: it
  // goes to another instance, a few times at most.
  constexpr int kMaxAttempts = 3;
  for (int attempt = 0; attempt == 0 || (result.kind == worker::CallResult::Kind::kNotStarted &&
                                         attempt < kMaxAttempts);
       ++attempt) {
    const bool first = attempt == 0;
    member = acquire(pool);
    if (!member) member = co_await wait_for_instance(pool, queued_at, out);
    if (!member) co_return out;
    if (first) {
      out.version = member->version;
      out.cold = member->fresh && member->on_demand;
      log.append(logs::start_line(clock_.wall_ms(), request_id, member->version));
    }
    member->fresh = false;
    const bool before_ready = member->starting;  // handed over early (hand_over_early)
    const auto handed_over = clock_.now();
    const worker::CallTags tags{request.kind, request.qualifier, request.depth};
    result = co_await member->instance->call(request_id, request.event_json, tags, timeout,
                                             clock_.wall_ms() + config.timeout_ms);
    if (before_ready && result.kind == worker::CallResult::Kind::kNotStarted) {
      // The instance it was sent to never became ready: the call gets why, as the calls that
      // waited for that start do.
      Status ready = co_await member->instance->ready(options_.init_timeout);
      if (!ready) {
        release(pool, member);
        if (refuse_if_closing(pool, out)) co_return out;
        const StartFailure failure = start_failure_of(ready.error());
        out.kind = InvokeOutcome::Kind::kInitError;
        out.start_failure = failure.kind;
        out.body = failure.error_object();
        co_return out;
      }
    }
    if (first && out.cold) out.init = member->instance->init_duration();
    out.queued = handed_over - queued_at + result.waited;
    if (result.kind == worker::CallResult::Kind::kNotStarted && attempt + 1 < kMaxAttempts) {
      release(pool, member);
    }
  }
  out.memory_mb = config.memory_mb;
  out.memory_peak = member->instance->memory_peak();
  pool.mean_call = moving_average(pool.mean_call, result.duration);
  member->busy += result.duration;
  pool.quiet_calls = result.printed ? 0 : std::min(pool.quiet_calls + 1, kPipelineQuietCalls);
  release(pool, member);
  out.duration = result.duration;
  out.kv_reads = result.kv_reads;
  out.kv_writes = result.kv_writes;
  log_report(function, request_id, out);
  out.body = std::move(result.body);
  out.content_type = std::move(result.content_type);
  switch (result.kind) {
    case worker::CallResult::Kind::kOk:
      out.kind = InvokeOutcome::Kind::kOk;
      break;
    case worker::CallResult::Kind::kFunctionError:
      out.kind = InvokeOutcome::Kind::kFunctionError;
      break;
    case worker::CallResult::Kind::kTimeout:
      out.kind = InvokeOutcome::Kind::kTimeout;
      out.body =
          fmt::format("the function did not finish within its timeout of {} ms", config.timeout_ms);
      break;
    case worker::CallResult::Kind::kCrash:
    case worker::CallResult::Kind::kNotStarted:  // its instances kept ending before its turn
      out.kind = InvokeOutcome::Kind::kCrash;
      out.crash_cause = result.cause;
      break;
  }
  co_return out;
}

bool Scheduler::refuse_if_closing(const Pool& pool, InvokeOutcome& out) const {
  if (!stopping_ && !pool.removing) return false;
  out.kind = InvokeOutcome::Kind::kUnavailable;
  out.body = stopping_ ? "the daemon is stopping" : "the function is being removed";
  return true;
}

asio::awaitable<std::shared_ptr<Scheduler::Member>> Scheduler::wait_for_instance(
    Pool& pool, Clock::time_point queued_at, InvokeOutcome& out) {
  if (refuse_if_closing(pool, out)) co_return nullptr;  // e.g. sent back by a removed instance
  if (static_cast<int>(pool.waiters.size()) >= options_.max_queue) {
    out.kind = InvokeOutcome::Kind::kThrottled;
    out.body = fmt::format("{} calls are already waiting for {}", pool.waiters.size(), pool.name);
    co_return nullptr;
  }
  // The timer measures what is left of the queue timeout; time itself is the clock's.
  const auto left = std::max(Clock::duration(0), queued_at + options_.queue_timeout - clock_.now());
  Waiter w{asio::steady_timer(io_, left), queued_at, nullptr, std::nullopt};
  pool.waiters.push_back(&w);
  ensure_starts(pool);
  // An instance that is ready at once is handed over inside ensure_starts(), before this wait
  // begins: cancelling a wait not yet begun does nothing, so that case must not wait at all.
  if (!w.member && !w.error) co_await w.timer.async_wait(kAwait);
  std::erase(pool.waiters, &w);
  if (w.error) {
    out.kind = InvokeOutcome::Kind::kInitError;
    out.start_failure = w.error->kind;
    out.body = w.error->error_object();
    co_return nullptr;
  }
  if (!w.member) {
    out.kind = stopping_ || pool.removing ? InvokeOutcome::Kind::kUnavailable
                                          : InvokeOutcome::Kind::kThrottled;
    out.body = out.kind == InvokeOutcome::Kind::kThrottled
                   ? fmt::format("no instance of {} became free within {} ms", pool.name,
                                 options_.queue_timeout.count())
                   : "the function is being removed or the daemon is stopping";
  }
  co_return std::move(w.member);
}

void Scheduler::log_report(const std::string& function, const std::string& request_id,
                           const InvokeOutcome& out) {
  auto& log = logs_.ring(function);
  const int64_t now_ms = clock_.wall_ms();
  log.append(logs::end_line(now_ms, request_id));
  log.append(
      logs::report_line(now_ms, request_id,
                        logs::CallReport{out.duration, metering::billed_ms(out.duration),
                                         out.memory_mb, out.memory_peak, out.cold, out.init}));
}

void Scheduler::on_deployed(const registry::RecordPtr& record) {
  factory_.prepare(*record);
  auto it = pools_.find(record->name);
  if (it == pools_.end()) return;
  Pool& pool = *it->second;
  bool warm = std::any_of(pool.members.begin(), pool.members.end(),
                          [](const auto& m) { return !m->stopping; });
  refresh(pool, record);
  // A function that is serving gets an instance of the new version now, so calls after the
  // switch find it ready instead of each waiting for a cold start.
  const auto& config = record->active().config;
  if (warm &&
      starts_needed(pool.views(), record->active_version,
                    StartInputs{1, config.max_instances, config.concurrency,
                                options_.max_concurrent_starts}) > 0 &&
      reserve_memory(pool, config.memory_mb)) {
    asio::co_spawn(io_, start_instance(pool.key, record, /*on_demand=*/false), log_exception);
  }
}

asio::awaitable<void> Scheduler::remove(const std::string& function, milliseconds deadline) {
  // From here no call of the function gets a pool, so none is made while these drain. A second
  // remove() of the same function leaves the work to the first.
  if (!removing_.insert(function).second) co_return;
  std::vector<std::string> keys;
  for_each_pool_of(function, [&](Pool& pool) {
    keys.push_back(pool.key);
    pool.removing = true;
    for (Waiter* w : pool.waiters) w->timer.cancel();
    pool.waiters.clear();
  });
  // One deadline for all of them: calls in flight finish first, then instances are stopped.
  const auto until = clock_.now() + deadline;
  for (const auto& key : keys) {
    auto it = pools_.find(key);
    if (it == pools_.end()) continue;
    Pool& pool = *it->second;
    co_await pool.calls.wait_for(std::max(Clock::duration(0), until - clock_.now()));
    for (const auto& m : std::vector(pool.members)) {
      stop_member(pool, m);
      if (pool.calls.size() > 0 && m->instance) m->instance->kill("its function was removed");
    }
    // Calls cut short by the kill above finish on the next turns of the loop.
    co_await pool.calls.wait();
    if (pool.pinned > 0) --pinned_pools_;
    pools_.erase(key);
  }
  removing_.erase(function);
  logs_.erase(function);
  sandbox_counts_.erase(function);
  factory_.forget(function);
}

void Scheduler::reap() {
  const auto t = clock_.now();
  for (const auto& record : registry_.list()) {
    if (record->active().config.min_instances > 0) pool_for(record->name);
  }
  for (auto it = pools_.begin(); it != pools_.end();) {
    Pool& pool = *it->second;
    if (pool.removing) {
      ++it;
      continue;
    }
    auto record = registry_.get(pool.name);
    if (!record || !refresh(pool, record)) {
      // The function, or the version a pinned pool serves, is gone.
      for (const auto& m : std::vector(pool.members)) {
        if (m->leased == 0) stop_member(pool, m);
      }
    } else {
      const auto& config = pool.record->active().config;
      // A pinned pool keeps no instances warm: min_instances is the active version's promise.
      int min_instances = pool.pinned > 0 ? 0 : config.min_instances;
      auto idle_timeout =
          std::chrono::duration_cast<Clock::duration>(std::chrono::seconds(config.idle_timeout_s));
      if (config.keep_alive == "hybrid" && pool.pinned == 0) {
        apply_hybrid_keep_alive(pool, t, idle_timeout, min_instances);
      }
      for (uint64_t id :
           idle_to_reap(pool.views(), t,
                        ReapInputs{pool.record->active_version,
                                   std::chrono::duration_cast<std::chrono::seconds>(idle_timeout),
                                   min_instances})) {
        stop_member(pool, pool.find(id));
      }
      int warm = prewarm_needed(pool.views(), pool.record->active_version, min_instances);
      for (int i = 0; i < warm && !stopping_; ++i) {
        if (!reserve_memory(pool, config.memory_mb)) break;
        asio::co_spawn(io_, start_instance(pool.key, pool.record, /*on_demand=*/false),
                       log_exception);
      }
    }
    // A pinned pool with nothing left in it goes; it comes back with the next call.
    if (pool.pinned > 0 && pool.members.empty() && pool.waiters.empty() && pool.calls.size() == 0) {
      --pinned_pools_;
      it = pools_.erase(it);
    } else {
      ++it;
    }
  }
}

void Scheduler::apply_hybrid_keep_alive(const Pool& pool, Clock::time_point now,
                                        Clock::duration& idle_timeout, int& min_instances) const {
  const KeepAlive k = hybrid_keep_alive(pool.idle_times, idle_timeout);
  if (!k.from_histogram) return;
  if (k.prewarm <= Clock::duration(0) || !pool.idle_since) {
    idle_timeout = k.keep_alive;
    return;
  }
  // Unloaded at once after the last call, one instance back `prewarm` later, kept until the
  // keep-alive window closes.
  const auto idle = now - *pool.idle_since;
  if (idle >= k.prewarm && idle < k.prewarm + k.keep_alive) {
    min_instances = std::max(min_instances, 1);
    idle_timeout = k.prewarm + k.keep_alive;
  } else {
    idle_timeout = Clock::duration(0);
  }
}

asio::awaitable<void> Scheduler::reaper() {
  while (!stopping_) {
    reap_timer_.expires_after(options_.reap_interval);
    auto [ec] = co_await reap_timer_.async_wait(kAwait);
    if (ec || stopping_) break;
    reap();
  }
}

asio::awaitable<void> Scheduler::shutdown() {
  stopping_ = true;
  reap_timer_.cancel();
  for (auto& [_, pool] : pools_) {
    for (Waiter* w : pool->waiters) w->timer.cancel();
    pool->waiters.clear();
    for (const auto& m : std::vector(pool->members)) stop_member(*pool, m);
  }
  const auto deadline = clock_.now() + options_.stop_grace + milliseconds(1000);
  while (live_instances() > 0 && clock_.now() < deadline) {
    exits_.reset();
    const bool exited = co_await exits_.wait_for(deadline - clock_.now());
    if (!exited) break;
  }
  for (auto& [_, pool] : pools_) {
    for (const auto& m : pool->members) {
      if (m->instance) m->instance->kill("the daemon is stopping");
    }
  }
}

void Scheduler::kill_all(const std::string& reason) {
  stopping_ = true;
  reap_timer_.cancel();
  for (auto& [_, pool] : pools_) {
    for (Waiter* w : pool->waiters) w->timer.cancel();
    pool->waiters.clear();
    for (const auto& m : pool->members) {
      if (m->instance) m->instance->kill(reason);
    }
  }
}

json Scheduler::sandbox_counts(const std::string& function) const {
  auto it = sandbox_counts_.find(function);
  SandboxCounts c = it == sandbox_counts_.end() ? SandboxCounts{} : it->second;
  return json{{"oom_kills", c.oom_kills},
              {"sandbox_violations", c.violations},
              {"pids_limit_hits", c.pids_limit_hits}};
}

json Scheduler::instance_counts(const std::string& function) const {
  int starting = 0, idle = 0, busy = 0, stopping = 0;
  for_each_pool_of(function, [&](const Pool& pool) {
    for (const auto& m : pool.members) {
      if (m->stopping) {
        ++stopping;
      } else if (m->starting) {
        ++starting;
      } else if (m->leased > 0) {
        ++busy;
      } else {
        ++idle;
      }
    }
  });
  return json{{"starting", starting}, {"idle", idle}, {"busy", busy}, {"stopping", stopping}};
}

size_t Scheduler::live_instances() const {
  size_t n = 0;
  for (const auto& [_, pool] : pools_) n += pool->members.size();
  return n;
}

}  // namespace ember::scheduler
