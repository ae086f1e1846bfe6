// Asynchronous invocations, kept durably: an event accepted with 202 is in storage before the
// answer leaves, and every change of its state after that is too. The dispatcher (dispatcher.h)
// holds the events in flight in memory and writes through this interface, implemented by the
// embedded SQLite store and by the PostgreSQL one several nodes share.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ember/common/result.h"

namespace ember::events {

// Where an event stands. queued: waiting for its next attempt (attempts says how many were
// made); running: an attempt is in flight; succeeded: an attempt returned a value; failed: every
// attempt failed and the event went to the function named by on_failure; dead: every attempt
// failed, or it grew too old, and it waits in the function's dead-letter list.
enum class State { kQueued, kRunning, kSucceeded, kFailed, kDead };
std::string_view state_name(State state);
std::optional<State> parse_state(std::string_view name);

struct Event {
  std::string id;
  std::string function;
  std::string qualifier;  // the version or alias named when it was sent; empty: the active one
  // The event as JSON. Shared: the payload is written once and copied by pointer afterwards.
  std::shared_ptr<const std::string> payload;
  std::string source;  // "api", "lambda", "schedule" or "function:NAME"
  State state = State::kQueued;
  int attempts = 0;     // attempts started
  int max_retries = 2;  // attempts after the first, as the function said when it was sent
  int64_t max_age_ms = 0;
  std::string on_failure = "dlq";  // "dlq" or "function:NAME"
  int depth = 0;                   // calls from function to function that led to it
  int64_t created_ms = 0;
  int64_t next_ms = 0;     // when the next attempt may start
  int64_t updated_ms = 0;  // the last change of state
  std::string request_id;  // of the last attempt
  // succeeded: the value as JSON; failed and dead: the last error, {"errorType",
  // "errorMessage"} as JSON; else empty.
  std::string result;
  // A scheduled event: the fire of its schedule (expression, due time) it is. The commit that
  // first stores the event records the fire too, and a fire recorded already (by another node)
  // fails the save with Errc::kConflict on the field "fire": each fire is sent once, whichever
  // nodes fire it.
  std::string fire_expression;
  int64_t fire_due_ms = 0;

  size_t bytes() const { return (payload ? payload->size() : 0) + result.size() + 256; }
  bool finished() const { return state != State::kQueued && state != State::kRunning; }
  // The view of GET /v1/invocations/{id}: everything but the payload.
  nlohmann::json to_json() const;
};

// Durable storage of events. Writes run on the store's own thread; those queued while a
// commit is in progress share the next one (group commit), and each one's `done` runs on that
// thread once its commit is on disk. Reads block the caller. Thread-safe.
class Store {
 public:
  using Done = std::function<void(Status)>;
  virtual ~Store() = default;

  // Inserts the event, or updates its state, attempts, times, request id and result (the rest
  // of an event never changes once stored).
  virtual void save(Event event, Done done) = 0;
  // Every event still queued or running that this node may run: what a restart resumes (with
  // several nodes: those of nodes no longer alive, taken over).
  virtual Result<std::vector<Event>> pending() = 0;
  virtual Result<std::optional<Event>> get(std::string_view id) = 0;
  // The events of `function` in `state`, oldest first, after the event `after_id` (a cursor),
  // at most `limit`.
  virtual Result<std::vector<Event>> list(std::string_view function, State state, size_t limit,
                                          std::string_view after_id) = 0;
  // Deletes succeeded and failed events last changed before `before_ms`, on the store's
  // thread, in the order of the writes around it.
  virtual void purge_finished(int64_t before_ms, Done done) = 0;
  // Deletes every event of a deleted function, and its schedules' fire times.
  virtual Status forget(std::string_view function) = 0;

  // When each schedule last fired: (function, expression) → the time it was due, in ms.
  virtual Result<std::map<std::pair<std::string, std::string>, int64_t>> fire_times() = 0;
  // Records that a schedule fired for the time `due_ms`, on the store's thread with the writes.
  virtual void fired(std::string function, std::string expression, int64_t due_ms, Done done) = 0;

  // save() that waits for its commit.
  Status save_now(Event event);

  // ---- Several nodes on one store (docs/scale-out.md) ----
  // An event is held by one node at a time: the node that stored it, or that took it over. A
  // node that holds events says it is alive every keep_alive_every(); the events of a node
  // that stopped saying so are taken over by the others. zero: the store is one node's alone.
  virtual std::chrono::milliseconds keep_alive_every() const { return {}; }
  using Adopted = std::function<void(Result<std::vector<Event>>)>;
  // Says this node is alive and takes up to `limit` queued or running events of nodes that are
  // not (each taken by exactly one node); `done` gets them, on the store's thread. A save() of
  // an event another node took over since fails with Errc::kConflict on the field "node".
  virtual void keep_alive(size_t /*limit*/, Adopted done) { done(std::vector<Event>{}); }
};

// The embedded store: `file` (events.db in the state directory), one SQLite database in WAL
// mode with synchronous=FULL.
Result<std::unique_ptr<Store>> open_sqlite(const std::filesystem::path& file);

struct PostgresOptions {
  std::string conninfo;  // libpq connection string
  std::string node;      // this node's name, unique among the nodes
  // A node silent this long is taken for dead and its events are taken over; it says it is
  // alive three times as often.
  std::chrono::milliseconds lease{10'000};
};

// The shared store of several nodes: tables events, schedule_fires and ember_nodes in a
// PostgreSQL database. Events are taken over with FOR UPDATE SKIP LOCKED, so each by one node.
Result<std::unique_ptr<Store>> open_postgres(const PostgresOptions& options);

}  // namespace ember::events
