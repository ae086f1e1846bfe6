// Runs asynchronous invocations: accepts events once they are durable, starts their attempts as
// the function's share of instances allows, retries failures with exponential backoff and
// jitter, and sends what keeps failing to the dead-letter list or to another function. Lives on
// the event loop's thread; time is read from a Clock, so tests drive it with a FakeClock.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <unordered_map>

#include "ember/common/async.h"
#include "ember/common/clock.h"
#include "ember/events/store.h"
#include "ember/registry/registry.h"
#include "ember/scheduler/scheduler.h"

namespace ember::events {

struct DispatcherOptions {
  size_t max_events = 100'000;                  // queued and running, every function; past it 429
  size_t max_per_function = 10'000;             // the same, per function
  uint64_t max_bytes = 256ULL << 20;            // payloads and results held, every function
  int max_in_flight = 16;                       // attempts running at once, every function
  size_t max_result_bytes = 256 << 10;          // a longer value is kept as {"truncated": true}
  std::chrono::milliseconds retry_base{1'000};  // the wait before the first retry, doubled after
  std::chrono::milliseconds retry_max{300'000};
  std::chrono::milliseconds throttled_delay{1'000};  // an attempt the function had no room for
  std::chrono::seconds keep_finished{86'400};  // succeeded and failed events are kept this long
  // The longest chain of function-to-function calls (context.invoke, on_failure function:NAME):
  // a call deeper than this is refused, which stops loops.
  int max_call_depth = 16;
  uint64_t seed = 0;  // jitter's generator; 0: from the kernel
};

// An event to send.
struct SendRequest {
  std::string function;
  std::string qualifier;  // a version or alias; empty: the active version
  std::string payload;    // JSON
  std::string source = "api";
  int depth = 0;
  // A schedule's fire (Event::fire_expression, fire_due_ms): sent once whichever nodes fire it;
  // Errc::kConflict when another node sent it.
  std::string fire_expression;
  int64_t fire_due_ms = 0;
};

struct DispatcherStats {
  size_t queued = 0, running = 0;
  uint64_t accepted = 0, attempts = 0, retries = 0, succeeded = 0, failed = 0, dead = 0,
           refused = 0;
};

class Dispatcher {
 public:
  // Runs one attempt of `event` (its attempts already count it): the scheduler's invoke, logged
  // and metered as any call (wired by the daemon).
  using Runner = std::function<boost::asio::awaitable<scheduler::InvokeOutcome>(
      const Event& event, scheduler::InvokeRequest request)>;

  Dispatcher(boost::asio::io_context& io, Store& store, const registry::Registry& registry,
             Runner run, DispatcherOptions options, const Clock& clock = system_clock());
  ~Dispatcher();

  // Resumes what a previous run left queued or running (an attempt cut short runs again:
  // delivery is at least once), then dispatches. Blocks on the store: call before serving. On
  // a store several nodes share, it also says this node is alive as often as the store asks,
  // and takes over the events of nodes that stopped.
  Status start();
  // Accepts an event: completes with its id once it is durable. Errc::kNotFound for an unknown
  // function, version or alias; Errc::kUnavailable when a queue limit is reached or the
  // dispatcher is stopping; Errc::kInvalid (field "depth") past max_call_depth; the store's
  // error when it cannot be saved.
  boost::asio::awaitable<Result<std::string>> send(SendRequest request);
  // The event, while the dispatcher holds it (queued, running, or finished and not yet
  // committed); nullopt: ask the store.
  std::optional<Event> find(std::string_view id) const;
  // Queues dead events again, attempts and age reset; returns how many.
  boost::asio::awaitable<Result<size_t>> redrive(std::vector<Event> dead);
  // Looks at the queue again now: after the clock moved (tests), or a function got room.
  void poke() { pump(); }
  // Drops the queued events of a deleted function (those running finish first).
  void forget(const std::string& function);
  // Starts no more attempts; waits up to `grace` for those running. Queued events stay stored.
  boost::asio::awaitable<void> stop(std::chrono::milliseconds grace);

  DispatcherStats stats() const;
  const DispatcherOptions& options() const { return options_; }
  void set_options(DispatcherOptions options) { options_ = std::move(options); }

 private:
  struct Entry {
    Event event;
    bool running = false;
    bool lost = false;       // another node took it over: it is released, never written again
    bool finishing = false;  // give_up() is sending it on: released only by its last save
  };
  using Due = std::pair<int64_t, std::string>;  // (next attempt, id or function)
  struct FunctionCounts {
    size_t held = 0;  // queued and running
    int running = 0;
    std::set<Due> ready;  // its queued events: (next attempt, id)
  };

  void hold(Event event);
  void release(const std::string& id);
  void queue(Entry& entry, int64_t at_ms);
  // Keeps heads_ in step after `counts.ready` changed; `before` was its first time.
  void reindex(const std::string& function, const FunctionCounts& counts,
               std::optional<int64_t> before);
  void pump();
  void arm(int64_t now_ms);
  void purge(int64_t now_ms);
  boost::asio::awaitable<void> attempt(std::string id);
  // Ends an event that will not run again: dead, or failed once it reached on_failure.
  boost::asio::awaitable<void> give_up(Entry& entry, std::string condition, std::string error);
  void save(const Event& event, bool release_after);
  // Another node holds the event now: it is dropped here once no attempt of it runs.
  void lose(const std::string& id);
  // Says this node is alive and takes over the events of nodes that are not (shared stores).
  void keep_alive();
  std::chrono::milliseconds backoff(int attempts);
  int share(const std::string& function) const;

  boost::asio::io_context& io_;
  Store& store_;
  const registry::Registry& registry_;
  Runner run_;
  DispatcherOptions options_;
  const Clock& clock_;
  std::unordered_map<std::string, Entry> held_;  // by id
  std::map<std::string, FunctionCounts> functions_;
  // Each function with queued events, by its earliest: (next attempt, function). A pump walks
  // functions, not events, so a function held at its share costs one step, however many
  // events it has queued.
  std::set<Due> heads_;
  uint64_t bytes_ = 0;
  int running_ = 0;
  bool stopping_ = false;
  bool pumping_ = false;
  bool pump_again_ = false;
  DispatcherStats counters_;
  boost::asio::steady_timer timer_;
  int64_t timer_at_ms_ = 0;
  boost::asio::steady_timer alive_timer_;
  // Shared with each attempt's frame, which may outlive the dispatcher when the event loop is
  // destroyed with attempts still suspended.
  std::shared_ptr<TaskGroup> attempts_;
  std::mt19937_64 rng_;
  int64_t last_purge_ms_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace ember::events
