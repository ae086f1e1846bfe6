// The embedded event store: events.db, one row per event. One thread commits writes in
// batches (group commit); reads use a second connection, under a lock.
#include <mutex>
#include <vector>

#include "ember/common/batch_queue.h"
#include "ember/events/store.h"
#include "ember/sqlite/sqlite.h"

namespace ember::events {

namespace {

// Every column of an event, in read_event()'s order. A macro, so that each query stays one
// string literal: the statement cache keys on the literal's address.
#define EMBER_EVENT_COLUMNS                                                              \
  "id, function, qualifier, payload, source, state, attempts, max_retries, max_age_ms, " \
  "on_failure, depth, created_ms, next_ms, updated_ms, request_id, result"

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS events (
  id TEXT PRIMARY KEY,
  function TEXT NOT NULL,
  qualifier TEXT NOT NULL,
  payload TEXT NOT NULL,
  source TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  max_retries INTEGER NOT NULL,
  max_age_ms INTEGER NOT NULL,
  on_failure TEXT NOT NULL,
  depth INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  next_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  request_id TEXT NOT NULL,
  result TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_function ON events (function, state, created_ms, id);
CREATE INDEX IF NOT EXISTS events_pending ON events (state) WHERE state IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS schedule_fires (
  function TEXT NOT NULL,
  expression TEXT NOT NULL,
  due_ms INTEGER NOT NULL,
  PRIMARY KEY (function, expression)
) WITHOUT ROWID;
)sql";

Event read_event(const sqlite::Statement& q) {
  Event e;
  e.id = q.column_text(0);
  e.function = q.column_text(1);
  e.qualifier = q.column_text(2);
  e.payload = std::make_shared<const std::string>(q.column_text(3));
  e.source = q.column_text(4);
  e.state = parse_state(q.column_text(5)).value_or(State::kQueued);
  e.attempts = static_cast<int>(q.column_int(6));
  e.max_retries = static_cast<int>(q.column_int(7));
  e.max_age_ms = q.column_int(8);
  e.on_failure = q.column_text(9);
  e.depth = static_cast<int>(q.column_int(10));
  e.created_ms = q.column_int(11);
  e.next_ms = q.column_int(12);
  e.updated_ms = q.column_int(13);
  e.request_id = q.column_text(14);
  e.result = q.column_text(15);
  return e;
}

class SqliteStore final : public Store {
 public:
  SqliteStore(std::unique_ptr<sqlite::Connection> writer,
              std::unique_ptr<sqlite::Connection> reader)
      : w_(std::move(writer)), r_(std::move(reader)) {
    writes_.start([this](std::vector<Pending>& batch) {
      const Status st = commit(batch);
      for (Pending& p : batch) {
        if (p.done) p.done(st);
      }
    });
  }
  ~SqliteStore() override { writes_.stop(); }

  void save(Event event, Done done) override {
    writes_.push(Pending{std::move(event), std::move(done), 0, 0});
  }

  Result<std::vector<Event>> pending() override {
    std::lock_guard lock(read_mu_);
    sqlite::Statement q(*r_, "SELECT " EMBER_EVENT_COLUMNS
                             " FROM events WHERE state IN ('queued', 'running') "
                             "ORDER BY created_ms, id");
    return collect(q);
  }

  Result<std::optional<Event>> get(std::string_view id) override {
    std::lock_guard lock(read_mu_);
    sqlite::Statement q(*r_, "SELECT " EMBER_EVENT_COLUMNS " FROM events WHERE id = ?1");
    if (!q) return r_->error("read");
    q.text(1, id);
    auto found = collect(q);
    if (!found) return found.error();
    if (found->empty()) return std::optional<Event>();
    return std::optional<Event>(std::move(found->front()));
  }

  Result<std::vector<Event>> list(std::string_view function, State state, size_t limit,
                                  std::string_view after_id) override {
    std::lock_guard lock(read_mu_);
    // The cursor is an event id; the page continues after it in (created_ms, id) order.
    sqlite::Statement q(
        *r_, "SELECT " EMBER_EVENT_COLUMNS
             " FROM events WHERE function = ?1 AND state = ?2 AND (?3 = '' OR (created_ms, id) > "
             "(SELECT created_ms, id FROM events WHERE id = ?3)) ORDER BY created_ms, id LIMIT ?4");
    if (!q) return r_->error("list");
    q.text(1, function);
    q.text(2, state_name(state));
    q.text(3, after_id);
    q.integer(4, static_cast<int64_t>(limit));
    return collect(q);
  }

  void purge_finished(int64_t before_ms, Done done) override {
    writes_.push(Pending{Event{}, std::move(done), before_ms, 0});
  }

  Status forget(std::string_view function) override {
    std::lock_guard lock(read_mu_);
    sqlite::Statement d(*r_, "DELETE FROM events WHERE function = ?1");
    if (!d) return r_->error("delete from");
    d.text(1, function);
    if (d.step() != SQLITE_DONE) return r_->error("delete from");
    sqlite::Statement f(*r_, "DELETE FROM schedule_fires WHERE function = ?1");
    if (!f) return r_->error("delete from");
    f.text(1, function);
    if (f.step() != SQLITE_DONE) return r_->error("delete from");
    return {};
  }

  Result<std::map<std::pair<std::string, std::string>, int64_t>> fire_times() override {
    std::lock_guard lock(read_mu_);
    sqlite::Statement q(*r_, "SELECT function, expression, due_ms FROM schedule_fires");
    if (!q) return r_->error("read");
    std::map<std::pair<std::string, std::string>, int64_t> out;
    int rc;
    while ((rc = q.step()) == SQLITE_ROW) {
      out[{q.column_text(0), q.column_text(1)}] = q.column_int(2);
    }
    if (rc != SQLITE_DONE) return r_->error("read");
    return out;
  }

  void fired(std::string function, std::string expression, int64_t due_ms, Done done) override {
    Pending p{Event{}, std::move(done), 0, due_ms};
    p.event.function = std::move(function);
    p.event.source = std::move(expression);
    writes_.push(std::move(p));
  }

 private:
  struct Pending {
    Event event;
    Done done;
    int64_t purge_before_ms = 0;  // > 0: not a write of `event` but a purge
    // > 0: not a write of `event` but a schedule's fire (event.function, expression in
    // event.source) at this time
    int64_t fired_due_ms = 0;
  };

  Result<std::vector<Event>> collect(sqlite::Statement& q) {
    if (!q) return r_->error("read");
    std::vector<Event> out;
    int rc;
    while ((rc = q.step()) == SQLITE_ROW) out.push_back(read_event(q));
    if (rc != SQLITE_DONE) return r_->error("read");
    return out;
  }

  Status commit(std::vector<Pending>& batch) {
    if (auto st = w_->exec("BEGIN IMMEDIATE"); !st) return st;
    Status st = write(batch);
    if (st) st = w_->exec("COMMIT");
    if (!st) (void)w_->exec("ROLLBACK");  // fails only when no transaction is left to undo
    return st;
  }

  Status write(std::vector<Pending>& batch) {
    for (const Pending& p : batch) {
      if (p.purge_before_ms > 0) {
        sqlite::Statement d(*w_,
                            "DELETE FROM events WHERE state IN ('succeeded', 'failed') AND "
                            "updated_ms < ?1");
        if (!d) return w_->error("purge");
        d.integer(1, p.purge_before_ms);
        if (d.step() != SQLITE_DONE) return w_->error("purge");
        continue;
      }
      if (p.fired_due_ms > 0) {
        if (auto st = record_fire(p.event.function, p.event.source, p.fired_due_ms); !st) {
          return st;
        }
        continue;
      }
      const Event& e = p.event;
      sqlite::Statement q(
          *w_, "INSERT INTO events (" EMBER_EVENT_COLUMNS
               ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, "
               "?14, ?15, ?16) ON CONFLICT (id) DO UPDATE SET state = excluded.state, attempts = "
               "excluded.attempts, next_ms = excluded.next_ms, updated_ms = excluded.updated_ms, "
               "request_id = excluded.request_id, result = excluded.result, created_ms = "
               "excluded.created_ms");
      if (!q) return w_->error("write to");
      q.text(1, e.id);
      q.text(2, e.function);
      q.text(3, e.qualifier);
      q.text(4, e.payload ? std::string_view(*e.payload) : std::string_view("{}"));
      q.text(5, e.source);
      q.text(6, state_name(e.state));
      q.integer(7, e.attempts);
      q.integer(8, e.max_retries);
      q.integer(9, e.max_age_ms);
      q.text(10, e.on_failure);
      q.integer(11, e.depth);
      q.integer(12, e.created_ms);
      q.integer(13, e.next_ms);
      q.integer(14, e.updated_ms);
      q.text(15, e.request_id);
      q.text(16, e.result);
      if (q.step() != SQLITE_DONE) return w_->error("write to");
      // One node fires each schedule here: its fire cannot have been recorded by another.
      if (e.fire_due_ms > 0) {
        if (auto st = record_fire(e.function, e.fire_expression, e.fire_due_ms); !st) return st;
      }
    }
    return {};
  }

  Status record_fire(const std::string& function, const std::string& expression, int64_t due_ms) {
    sqlite::Statement f(*w_,
                        "INSERT INTO schedule_fires (function, expression, due_ms) VALUES "
                        "(?1, ?2, ?3) ON CONFLICT (function, expression) DO UPDATE SET "
                        "due_ms = excluded.due_ms");
    if (!f) return w_->error("write to");
    f.text(1, function);
    f.text(2, expression);
    f.integer(3, due_ms);
    if (f.step() != SQLITE_DONE) return w_->error("write to");
    return {};
  }

  std::unique_ptr<sqlite::Connection> w_;  // the committing thread's
  std::unique_ptr<sqlite::Connection> r_;  // readers', under read_mu_
  std::mutex read_mu_;
  BatchQueue<Pending> writes_;  // last: its thread stops before the connections close
};

}  // namespace

Result<std::unique_ptr<Store>> open_sqlite(const std::filesystem::path& file) {
  auto writer = sqlite::Connection::open(file, "event queue");
  if (!writer) return writer.error();
  if (auto st = (*writer)->exec(kSchema); !st) return st.error();
  auto reader = sqlite::Connection::open(file, "event queue");
  if (!reader) return reader.error();
  return std::unique_ptr<Store>(new SqliteStore(std::move(*writer), std::move(*reader)));
}

}  // namespace ember::events
