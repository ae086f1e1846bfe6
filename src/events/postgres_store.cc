// The shared event store: several nodes on one PostgreSQL database. Each event row names the
// node that holds it; nodes say they are alive in ember_nodes, on the server's clock, and the
// events of a node that stopped saying so are taken over, each by one node (FOR UPDATE SKIP
// LOCKED). Writes are committed by one thread in batches (group commit), as in the embedded
// store; reads use a second connection, under a lock.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <mutex>
#include <vector>

#include "ember/common/batch_queue.h"
#include "ember/events/store.h"
#include "ember/postgres/postgres.h"

namespace ember::events {

namespace {

using postgres::Connection;
using postgres::Rows;

// Every column of an event, in read_event()'s order (string literals, so that queries are too).
#define EMBER_EVENT_COLUMNS                                                              \
  "id, function, qualifier, payload, source, state, attempts, max_retries, max_age_ms, " \
  "on_failure, depth, created_ms, next_ms, updated_ms, request_id, result"
// The server's clock in ms: every node's liveness is judged on one clock.
#define EMBER_NOW_MS "(extract(epoch from clock_timestamp()) * 1000)::bigint"

constexpr const char* kSchema = R"sql(
SELECT pg_advisory_xact_lock(7202);
CREATE TABLE IF NOT EXISTS events (
  id TEXT PRIMARY KEY,
  function TEXT NOT NULL,
  qualifier TEXT NOT NULL,
  payload TEXT NOT NULL,
  source TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  max_retries INTEGER NOT NULL,
  max_age_ms BIGINT NOT NULL,
  on_failure TEXT NOT NULL,
  depth INTEGER NOT NULL,
  created_ms BIGINT NOT NULL,
  next_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL,
  request_id TEXT NOT NULL,
  result TEXT NOT NULL,
  node TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_function ON events (function, state, created_ms, id);
CREATE INDEX IF NOT EXISTS events_held ON events (node, created_ms)
  WHERE state IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS schedule_fires (
  function TEXT NOT NULL,
  expression TEXT NOT NULL,
  due_ms BIGINT NOT NULL,
  PRIMARY KEY (function, expression)
);
CREATE TABLE IF NOT EXISTS ember_nodes (
  node TEXT PRIMARY KEY,
  alive_ms BIGINT NOT NULL
);
)sql";

// Nodes silent for a day are forgotten (their events were taken over long before).
constexpr int64_t kForgetNodeMs = 86'400'000;

std::vector<Event> read_events(const Rows& rows) {
  std::vector<Event> out;
  out.reserve(rows.size());
  for (int i = 0; i < rows.size(); ++i) {
    Event e;
    e.id = rows.text(i, 0);
    e.function = rows.text(i, 1);
    e.qualifier = rows.text(i, 2);
    e.payload = std::make_shared<const std::string>(rows.text(i, 3));
    e.source = rows.text(i, 4);
    e.state = parse_state(rows.view(i, 5)).value_or(State::kQueued);
    e.attempts = static_cast<int>(rows.integer(i, 6));
    e.max_retries = static_cast<int>(rows.integer(i, 7));
    e.max_age_ms = rows.integer(i, 8);
    e.on_failure = rows.text(i, 9);
    e.depth = static_cast<int>(rows.integer(i, 10));
    e.created_ms = rows.integer(i, 11);
    e.next_ms = rows.integer(i, 12);
    e.updated_ms = rows.integer(i, 13);
    e.request_id = rows.text(i, 14);
    e.result = rows.text(i, 15);
    out.push_back(std::move(e));
  }
  return out;
}

class PostgresStore final : public Store {
 public:
  PostgresStore(std::unique_ptr<Connection> writer, std::unique_ptr<Connection> reader,
                std::unique_ptr<Connection> alive, PostgresOptions options)
      : w_(std::move(writer)),
        a_(std::move(alive)),
        r_(std::move(reader)),
        options_(std::move(options)) {
    writes_.start([this](std::vector<Pending>& batch) { serve(batch); });
    alive_.start([this](std::vector<Pending>& batch) {
      for (Pending& p : batch) serve_keep_alive(p);
    });
  }
  ~PostgresStore() override {
    writes_.stop();
    alive_.stop();
  }

  void save(Event event, Done done) override {
    Pending p;
    p.event = std::move(event);
    p.done = std::move(done);
    writes_.push(std::move(p));
  }

  Result<std::vector<Event>> pending() override {
    std::lock_guard lock(read_mu_);
    if (auto st = heartbeat(*r_); !st) return st.error();
    // At start, this node's own events of an earlier run too (a node named in the config).
    return adopt(*r_, 1'000'000, true);
  }

  Result<std::optional<Event>> get(std::string_view id) override {
    std::lock_guard lock(read_mu_);
    auto rows = r_->exec("SELECT " EMBER_EVENT_COLUMNS " FROM events WHERE id = $1", {id});
    if (!rows) return rows.error();
    auto found = read_events(*rows);
    if (found.empty()) return std::optional<Event>();
    return std::optional<Event>(std::move(found.front()));
  }

  Result<std::vector<Event>> list(std::string_view function, State state, size_t limit,
                                  std::string_view after_id) override {
    std::lock_guard lock(read_mu_);
    auto rows = r_->exec("SELECT " EMBER_EVENT_COLUMNS
                         " FROM events WHERE function = $1 AND state = $2 AND ($3 = '' OR "
                         "(created_ms, id) > (SELECT created_ms, id FROM events WHERE id = $3)) "
                         "ORDER BY created_ms, id LIMIT $4",
                         {function, state_name(state), after_id, static_cast<int64_t>(limit)});
    if (!rows) return rows.error();
    return read_events(*rows);
  }

  void purge_finished(int64_t before_ms, Done done) override {
    Pending p;
    p.kind = Kind::kPurge;
    p.at_ms = before_ms;
    p.done = std::move(done);
    writes_.push(std::move(p));
  }

  Status forget(std::string_view function) override {
    std::lock_guard lock(read_mu_);
    return r_->transaction([&]() -> Status {
      if (auto d = r_->exec("DELETE FROM events WHERE function = $1", {function}); !d) {
        return d.error();
      }
      if (auto d = r_->exec("DELETE FROM schedule_fires WHERE function = $1", {function}); !d) {
        return d.error();
      }
      return {};
    });
  }

  Result<std::map<std::pair<std::string, std::string>, int64_t>> fire_times() override {
    std::lock_guard lock(read_mu_);
    auto rows = r_->exec("SELECT function, expression, due_ms FROM schedule_fires");
    if (!rows) return rows.error();
    std::map<std::pair<std::string, std::string>, int64_t> out;
    for (int i = 0; i < rows->size(); ++i) {
      out[{rows->text(i, 0), rows->text(i, 1)}] = rows->integer(i, 2);
    }
    return out;
  }

  void fired(std::string function, std::string expression, int64_t due_ms, Done done) override {
    Pending p;
    p.kind = Kind::kFired;
    p.event.function = std::move(function);
    p.event.fire_expression = std::move(expression);
    p.at_ms = due_ms;
    p.done = std::move(done);
    writes_.push(std::move(p));
  }

  std::chrono::milliseconds keep_alive_every() const override { return options_.lease / 3; }

  void keep_alive(size_t limit, Adopted done) override {
    Pending p;
    p.kind = Kind::kKeepAlive;
    p.at_ms = static_cast<int64_t>(limit);
    p.adopted = std::move(done);
    // On a thread and connection of their own: a write stuck on a lock never makes a live
    // node look dead.
    alive_.push(std::move(p));
  }

  // Says this node is alive.
  Status heartbeat() {
    std::lock_guard lock(read_mu_);
    return heartbeat(*r_);
  }

 private:
  enum class Kind { kSave, kPurge, kFired, kKeepAlive };
  struct Pending {
    Kind kind = Kind::kSave;
    Event event;
    int64_t at_ms = 0;  // purge: before; fired: the due time; keep-alive: the limit
    Done done;
    Adopted adopted;
    Status status;  // this write's own outcome, when the batch commits
  };

  Status heartbeat(Connection& c) {
    auto r = c.exec("INSERT INTO ember_nodes (node, alive_ms) VALUES ($1, " EMBER_NOW_MS
                    ") ON CONFLICT (node) DO UPDATE SET alive_ms = excluded.alive_ms",
                    {options_.node});
    if (!r) return r.error();
    return {};
  }

  // Takes up to `limit` queued or running events of nodes not alive (and, with `own`, this
  // node's own from an earlier run), oldest first.
  Result<std::vector<Event>> adopt(Connection& c, size_t limit, bool own) {
    auto rows = c.exec(
        "UPDATE events SET node = $1 WHERE id IN (SELECT e.id FROM events e "
        "WHERE e.state IN ('queued', 'running') AND ((e.node = $1 AND $4) OR (e.node <> $1 AND "
        "NOT EXISTS (SELECT 1 FROM ember_nodes n WHERE n.node = e.node AND n.alive_ms "
        "> " EMBER_NOW_MS
        " - $2))) ORDER BY e.created_ms LIMIT $3 FOR UPDATE OF e SKIP LOCKED) "
        "RETURNING " EMBER_EVENT_COLUMNS,
        {options_.node, static_cast<int64_t>(options_.lease.count()), static_cast<int64_t>(limit),
         own ? "true" : "false"});
    if (!rows) return rows.error();
    auto events = read_events(*rows);
    if (!events.empty()) {
      spdlog::info("events: took over {} events of nodes that stopped", events.size());
    }
    return events;
  }

  void serve(std::vector<Pending>& batch) {
    const Status st = w_->transaction([&]() -> Status {
      for (Pending& p : batch) {
        p.status = {};
        if (auto failed = write(p); !failed) return failed;
      }
      return {};
    });
    for (Pending& p : batch) {
      if (p.done) p.done(st ? p.status : st);
    }
  }

  void serve_keep_alive(Pending& p) {
    Result<std::vector<Event>> taken = std::vector<Event>{};
    Status st = a_->transaction([&]() -> Status {
      if (auto beat = heartbeat(*a_); !beat) return beat;
      (void)a_->exec("DELETE FROM ember_nodes WHERE alive_ms < " EMBER_NOW_MS " - $1",
                     {kForgetNodeMs});
      taken = adopt(*a_, static_cast<size_t>(p.at_ms), false);
      if (!taken) return taken.error();
      return {};
    });
    if (!st) {
      spdlog::warn("events: cannot say this node is alive: {}", st.error().message);
      p.adopted(st.error());
      return;
    }
    p.adopted(std::move(taken));
  }

  // One write inside the batch's transaction. An error fails the batch; a write refused by
  // another node's hold gets its own status and leaves the rest.
  Status write(Pending& p) {
    switch (p.kind) {
      case Kind::kPurge: {
        auto r = w_->exec(
            "DELETE FROM events WHERE state IN ('succeeded', 'failed') AND updated_ms < $1",
            {p.at_ms});
        return r ? Status() : Status(r.error());
      }
      case Kind::kFired: {
        auto r = record_fire(p.event.function, p.event.fire_expression, p.at_ms);
        return r ? Status() : Status(r.error());
      }
      case Kind::kKeepAlive:
        return {};
      case Kind::kSave:
        break;
    }
    const Event& e = p.event;
    if (e.fire_due_ms > 0) {
      auto won = record_fire(e.function, e.fire_expression, e.fire_due_ms);
      if (!won) return won.error();
      if (!*won) {
        Error fired = Error::conflict(fmt::format("schedule {} of {} fired already for this time",
                                                  e.fire_expression, e.function));
        fired.field = "fire";
        p.status = std::move(fired);
        return {};
      }
    }
    // An event is written by the node that holds it; a dead one may be queued again from
    // scratch (redriven) by any node, which then holds it.
    auto r = w_->exec(
        "INSERT INTO events (" EMBER_EVENT_COLUMNS
        ", node) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, "
        "$17) ON CONFLICT (id) DO UPDATE SET state = excluded.state, attempts = "
        "excluded.attempts, next_ms = excluded.next_ms, updated_ms = excluded.updated_ms, "
        "request_id = excluded.request_id, result = excluded.result, created_ms = "
        "excluded.created_ms, node = excluded.node WHERE events.node = excluded.node OR "
        "(events.state = 'dead' AND excluded.state = 'queued' AND excluded.attempts = 0)",
        {e.id, e.function, e.qualifier,
         e.payload ? std::string_view(*e.payload) : std::string_view("{}"), e.source,
         state_name(e.state), e.attempts, e.max_retries, e.max_age_ms, e.on_failure, e.depth,
         e.created_ms, e.next_ms, e.updated_ms, e.request_id, e.result, options_.node});
    if (!r) return r.error();
    if (r->affected() == 0) {
      Error held = Error::conflict(fmt::format("event {} is held by another node", e.id));
      held.field = "node";
      p.status = std::move(held);
    }
    return {};
  }

  // Records a schedule's fire; false when it was recorded for this time or later already.
  Result<bool> record_fire(const std::string& function, const std::string& expression,
                           int64_t due_ms) {
    auto r = w_->exec(
        "INSERT INTO schedule_fires (function, expression, due_ms) VALUES ($1, $2, $3) "
        "ON CONFLICT (function, expression) DO UPDATE SET due_ms = excluded.due_ms "
        "WHERE schedule_fires.due_ms < excluded.due_ms",
        {function, expression, due_ms});
    if (!r) return r.error();
    return r->affected() > 0;
  }

  std::unique_ptr<Connection> w_;  // the committing thread's
  std::unique_ptr<Connection> a_;  // the keep-alive thread's
  std::unique_ptr<Connection> r_;  // readers', under read_mu_
  std::mutex read_mu_;
  PostgresOptions options_;
  BatchQueue<Pending> writes_;  // last: their threads stop before the connections close
  BatchQueue<Pending> alive_;
};

}  // namespace

Result<std::unique_ptr<Store>> open_postgres(const PostgresOptions& options) {
  if (options.node.empty()) return Error::invalid("a node of a shared store needs a name", "node");
  auto writer = Connection::open(options.conninfo, "event queue");
  if (!writer) return writer.error();
  if (auto st = (*writer)->create_schema(kSchema); !st) {
    return st.error();
  }
  auto reader = Connection::open(options.conninfo, "event queue");
  if (!reader) return reader.error();
  auto alive = Connection::open(options.conninfo, "event queue");
  if (!alive) return alive.error();
  auto store = std::make_unique<PostgresStore>(std::move(*writer), std::move(*reader),
                                               std::move(*alive), options);
  // Alive from the start: what it stores is its own before its first keep_alive().
  if (auto st = store->heartbeat(); !st) return st.error();
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace ember::events
