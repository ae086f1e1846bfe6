// Prometheus metrics: counters and histograms updated as calls end, gauges sampled when
// /metrics is scraped. Built on prometheus-cpp's core registry; the text is served by the
// gateway, not by the library's own HTTP server. Thread-safe. Each function's series are looked
// up once and kept, so a call costs a map lookup and a few atomic adds, not a label-set build.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "ember/metering/usage.h"

namespace prometheus {
class Registry;
template <typename T>
class Family;
class Counter;
class Histogram;
class Gauge;
}  // namespace prometheus

namespace ember::metering {

struct InvocationSample {
  std::string function;
  Outcome outcome = Outcome::kOk;
  bool cold = false;
  bool ran = false;  // reached an instance: duration and queue wait are observed
  double queue_seconds = 0;
  double init_seconds = 0;  // cold starts only
  double duration_seconds = 0;
};

// Sampled at scrape time.
struct FunctionState {
  std::string function;
  int starting = 0, idle = 0, busy = 0, stopping = 0;
};

struct DaemonState {
  std::vector<FunctionState> functions;
  int64_t memory_used_mb = 0;
  int64_t memory_budget_mb = 0;
  uint64_t spawn_failures = 0;
  uint64_t kv_writes = 0;   // key-value writes the store applied
  uint64_t kv_commits = 0;  // the durable commits they took
  uint64_t open_connections = 0;
  uint64_t connections = 0;  // accepted since start
  // Asynchronous invocations (docs/events.md): held now, and counted since start.
  uint64_t events_queued = 0, events_running = 0;
  uint64_t events_accepted = 0, events_refused = 0, events_attempts = 0, events_retries = 0,
           events_succeeded = 0, events_failed = 0, events_dead = 0;
  // Pre-initialised workers: waiting and starting now, their memory, starts they served.
  uint64_t pool_waiting = 0, pool_starting = 0, pool_memory_mb = 0, pool_hits = 0, pool_misses = 0;
  uint64_t bytecode_running = 0, bytecode_modules = 0;
};

class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  void invocation(const InvocationSample& sample);
  void request(std::string_view route, unsigned status);
  // A key-value operation of `function` (empty: the admin API), by op and result ("ok" or the
  // error type), and how long the store took.
  void kv_operation(std::string_view function, std::string_view op, std::string_view result,
                    double seconds);
  // A deleted function's series go away with it.
  void forget(const std::string& function);
  // The Prometheus text exposition format (version 0.0.4).
  std::string render(const DaemonState& state) const;

 private:
  struct Series {
    std::array<prometheus::Counter*, std::size(kOutcomes)> outcomes{};  // by Outcome
    prometheus::Counter* cold = nullptr;
    prometheus::Histogram* duration = nullptr;
    prometheus::Histogram* init = nullptr;
    prometheus::Histogram* queue = nullptr;
  };
  Series& series(const std::string& function);  // with mu_ held

  std::shared_ptr<prometheus::Registry> registry_;
  std::mutex mu_;
  std::map<std::string, Series, std::less<>> series_;
  std::map<std::pair<std::string, unsigned>, prometheus::Counter*, std::less<>> requests_by_key_;
  prometheus::Family<prometheus::Counter>* invocations_;
  prometheus::Family<prometheus::Counter>* cold_starts_;
  prometheus::Family<prometheus::Histogram>* duration_;
  prometheus::Family<prometheus::Histogram>* init_;
  prometheus::Family<prometheus::Histogram>* queue_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Counter>* kv_ops_;
  prometheus::Family<prometheus::Histogram>* kv_duration_;
  // Orders (function, op, result) keys of strings and of string views alike, so a lookup makes
  // no strings (mixed tuple comparison through std::less<> is not portable across compilers).
  struct ViewLess {
    using is_transparent = void;
    template <class A, class B>
    bool operator()(const A& a, const B& b) const {
      return view(a) < view(b);
    }
    template <class T>
    static std::tuple<std::string_view, std::string_view, std::string_view> view(const T& t) {
      return {std::get<0>(t), std::get<1>(t), std::get<2>(t)};
    }
  };
  // By (function, op, result) and by op.
  std::map<std::tuple<std::string, std::string, std::string>, prometheus::Counter*, ViewLess>
      kv_ops_by_key_;
  std::map<std::string, prometheus::Histogram*, std::less<>> kv_duration_by_op_;
};

}  // namespace ember::metering
