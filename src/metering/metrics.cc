#include "ember/metering/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "ember/os/proc_stats.h"

namespace ember::metering {

namespace {

namespace pm = prometheus;

// Warm calls of small handlers take well under a millisecond; timeouts go up to 15 minutes.
const pm::Histogram::BucketBoundaries& duration_buckets() {
  static const pm::Histogram::BucketBoundaries b{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                 0.05,   0.1,   0.25,   0.5,   1,    2.5,
                                                 5,      10,    30,     60,    300,  900};
  return b;
}
const pm::Histogram::BucketBoundaries& init_buckets() {
  static const pm::Histogram::BucketBoundaries b{0.01, 0.025, 0.05, 0.075, 0.1, 0.15,
                                                 0.25, 0.5,   1,    2.5,   5,   10};
  return b;
}
const pm::Histogram::BucketBoundaries& queue_buckets() {
  static const pm::Histogram::BucketBoundaries b{0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05,
                                                 0.1,    0.25,   0.5,   1,     2.5,  10};
  return b;
}

}  // namespace

Metrics::Metrics() : registry_(std::make_shared<pm::Registry>()) {
  invocations_ = &pm::BuildCounter()
                      .Name("ember_invocations_total")
                      .Help(
                          "Calls by function and outcome (ok, error, timeout, crash, oom, "
                          "throttled).")
                      .Register(*registry_);
  cold_starts_ = &pm::BuildCounter()
                      .Name("ember_cold_starts_total")
                      .Help("Calls that waited for a new instance to start.")
                      .Register(*registry_);
  duration_ = &pm::BuildHistogram()
                   .Name("ember_invocation_duration_seconds")
                   .Help("Time the handler ran, per call that reached an instance.")
                   .Register(*registry_);
  init_ = &pm::BuildHistogram()
               .Name("ember_init_duration_seconds")
               .Help("Start-up time of the instance a cold call waited for.")
               .Register(*registry_);
  queue_ = &pm::BuildHistogram()
                .Name("ember_queue_wait_seconds")
                .Help("Time a call waited for an instance (cold start included).")
                .Register(*registry_);
  requests_ = &pm::BuildCounter()
                   .Name("ember_http_requests_total")
                   .Help("HTTP requests by route and status code.")
                   .Register(*registry_);
  kv_ops_ = &pm::BuildCounter()
                 .Name("ember_kv_operations_total")
                 .Help(
                     "Key-value operations by function (empty: the admin API), op (get, put, "
                     "incr, delete, list) and result (ok or the error type).")
                 .Register(*registry_);
  kv_duration_ = &pm::BuildHistogram()
                      .Name("ember_kv_operation_duration_seconds")
                      .Help("Time the store took for an operation, durable commit included.")
                      .Register(*registry_);
}

Metrics::~Metrics() = default;

Metrics::Series& Metrics::series(const std::string& function) {
  auto it = series_.find(function);
  if (it != series_.end()) return it->second;
  Series s;
  for (Outcome o : kOutcomes) {
    s.outcomes[static_cast<size_t>(o)] =
        &invocations_->Add({{"function", function}, {"outcome", std::string(outcome_name(o))}});
  }
  s.cold = &cold_starts_->Add({{"function", function}});
  s.duration = &duration_->Add({{"function", function}}, duration_buckets());
  s.init = &init_->Add({{"function", function}}, init_buckets());
  s.queue = &queue_->Add({{"function", function}}, queue_buckets());
  return series_.emplace(function, s).first->second;
}

void Metrics::invocation(const InvocationSample& s) {
  std::lock_guard lock(mu_);
  Series& fn = series(s.function);
  fn.outcomes[static_cast<size_t>(s.outcome)]->Increment();
  if (s.cold) fn.cold->Increment();
  if (s.ran) {
    fn.duration->Observe(s.duration_seconds);
    fn.queue->Observe(s.queue_seconds);
  }
  if (s.cold && s.init_seconds > 0) fn.init->Observe(s.init_seconds);
}

void Metrics::request(std::string_view route, unsigned status) {
  std::lock_guard lock(mu_);
  auto key = std::make_pair(std::string(route), status);
  auto it = requests_by_key_.find(key);
  if (it == requests_by_key_.end()) {
    auto* counter = &requests_->Add({{"route", key.first}, {"code", std::to_string(status)}});
    it = requests_by_key_.emplace(std::move(key), counter).first;
  }
  it->second->Increment();
}

void Metrics::kv_operation(std::string_view function, std::string_view op, std::string_view result,
                           double seconds) {
  static const pm::Histogram::BucketBoundaries kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};
  std::lock_guard lock(mu_);
  // Found without building strings: this runs for every operation.
  auto it = kv_ops_by_key_.find(std::make_tuple(function, op, result));
  if (it == kv_ops_by_key_.end()) {
    auto key = std::make_tuple(std::string(function), std::string(op), std::string(result));
    auto* counter = &kv_ops_->Add(
        {{"function", std::get<0>(key)}, {"op", std::get<1>(key)}, {"result", std::get<2>(key)}});
    it = kv_ops_by_key_.emplace(std::move(key), counter).first;
  }
  it->second->Increment();
  auto h = kv_duration_by_op_.find(op);
  if (h == kv_duration_by_op_.end()) {
    h = kv_duration_by_op_
            .emplace(std::string(op), &kv_duration_->Add({{"op", std::string(op)}}, kBuckets))
            .first;
  }
  h->second->Observe(seconds);
}

void Metrics::forget(const std::string& function) {
  std::lock_guard lock(mu_);
  for (auto kv = kv_ops_by_key_.begin(); kv != kv_ops_by_key_.end();) {
    if (std::get<0>(kv->first) == function) {
      kv_ops_->Remove(kv->second);
      kv = kv_ops_by_key_.erase(kv);
    } else {
      ++kv;
    }
  }
  auto it = series_.find(function);
  if (it == series_.end()) return;
  const Series& s = it->second;
  for (auto* c : s.outcomes) invocations_->Remove(c);
  cold_starts_->Remove(s.cold);
  duration_->Remove(s.duration);
  init_->Remove(s.init);
  queue_->Remove(s.queue);
  series_.erase(it);
}

std::string Metrics::render(const DaemonState& state) const {
  // Gauges are sampled now, in a registry of their own that lives for this scrape.
  pm::Registry now;
  auto& instances = pm::BuildGauge()
                        .Name("ember_instances")
                        .Help("Instances by function and state.")
                        .Register(now);
  for (const auto& f : state.functions) {
    instances.Add({{"function", f.function}, {"state", "starting"}}).Set(f.starting);
    instances.Add({{"function", f.function}, {"state", "idle"}}).Set(f.idle);
    instances.Add({{"function", f.function}, {"state", "busy"}}).Set(f.busy);
    instances.Add({{"function", f.function}, {"state", "stopping"}}).Set(f.stopping);
  }
  auto gauge = [&now](const char* name, const char* help, double value) {
    pm::BuildGauge().Name(name).Help(help).Register(now).Add({}).Set(value);
  };
  auto counter = [&now](const char* name, const char* help, double value) {
    pm::BuildCounter().Name(name).Help(help).Register(now).Add({}).Increment(value);
  };
  constexpr double kMiB = 1 << 20;
  gauge("ember_functions", "Deployed functions.", static_cast<double>(state.functions.size()));
  gauge("ember_memory_budget_used_bytes",
        "Memory reserved by live instances (their memory_mb), counted against the budget.",
        static_cast<double>(state.memory_used_mb) * kMiB);
  gauge("ember_memory_budget_bytes", "The host memory budget for instances.",
        static_cast<double>(state.memory_budget_mb) * kMiB);
  counter("ember_spawn_failures_total", "Instances that could not be started.",
          static_cast<double>(state.spawn_failures));
  counter("ember_kv_writes_applied_total", "Key-value writes the store applied.",
          static_cast<double>(state.kv_writes));
  counter("ember_kv_commits_total",
          "Durable commits of the key-value store; writes per commit is the group commit's gain.",
          static_cast<double>(state.kv_commits));
  auto& pool = pm::BuildGauge()
                   .Name("ember_pool_workers")
                   .Help("Pre-initialised workers that wait for a function, or are starting.")
                   .Register(now);
  pool.Add({{"state", "waiting"}}).Set(static_cast<double>(state.pool_waiting));
  pool.Add({{"state", "starting"}}).Set(static_cast<double>(state.pool_starting));
  gauge("ember_pool_memory_bytes", "The memory limits of pre-initialised workers together.",
        static_cast<double>(state.pool_memory_mb) * kMiB);
  auto& pool_starts = pm::BuildCounter()
                          .Name("ember_pool_starts_total")
                          .Help(
                              "Starts of functions that could use a pre-initialised worker: "
                              "served by one (hit) or cold (miss).")
                          .Register(now);
  pool_starts.Add({{"result", "hit"}}).Increment(static_cast<double>(state.pool_hits));
  pool_starts.Add({{"result", "miss"}}).Increment(static_cast<double>(state.pool_misses));
  gauge("ember_bytecode_compiles_running",
        "Python bundles whose bytecode compile was asked for (after a deploy, or a second after "
        "a first start) and has not finished.",
        static_cast<double>(state.bytecode_running));
  counter("ember_bytecode_modules_total", "Python modules compiled to bytecode and stored.",
          static_cast<double>(state.bytecode_modules));
  auto& events = pm::BuildGauge()
                     .Name("ember_events")
                     .Help("Asynchronous events held, by state.")
                     .Register(now);
  events.Add({{"state", "queued"}}).Set(static_cast<double>(state.events_queued));
  events.Add({{"state", "running"}}).Set(static_cast<double>(state.events_running));
  auto& outcomes = pm::BuildCounter()
                       .Name("ember_events_total")
                       .Help(
                           "Asynchronous events since start: accepted, refused (queue full), "
                           "attempts, retries, and how they ended.")
                       .Register(now);
  for (const auto& [what, n] :
       {std::pair{"accepted", state.events_accepted}, std::pair{"refused", state.events_refused},
        std::pair{"attempt", state.events_attempts}, std::pair{"retry", state.events_retries},
        std::pair{"succeeded", state.events_succeeded}, std::pair{"failed", state.events_failed},
        std::pair{"dead", state.events_dead}}) {
    outcomes.Add({{"event", what}}).Increment(static_cast<double>(n));
  }
  gauge("ember_http_connections", "Open HTTP connections.",
        static_cast<double>(state.open_connections));
  counter("ember_http_connections_total", "HTTP connections accepted.",
          static_cast<double>(state.connections));

  const os::ProcStats self = os::self_stats();
  gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
        static_cast<double>(self.rss_bytes));
  gauge("process_open_fds", "Number of open file descriptors.", static_cast<double>(self.open_fds));
  gauge("process_max_fds", "Maximum number of open file descriptors.",
        static_cast<double>(self.max_fds));
  counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
          self.cpu_seconds);
  gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
        self.start_time_seconds);

  std::vector<pm::MetricFamily> families = registry_->Collect();
  for (auto& f : now.Collect()) families.push_back(std::move(f));
  return pm::TextSerializer().Serialize(families);
}

}  // namespace ember::metering
