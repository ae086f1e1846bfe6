// PostgreSQL, the shared storage of several Ember nodes (docs/scale-out.md): one way to connect,
// run SQL with parameters, read rows and listen for notifications, with errors as values.
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ember/common/result.h"

namespace ember::postgres {

// One parameter of a statement: text (integers are sent as their decimal text), bytes (bytea,
// sent in binary) or NULL.
class Param {
 public:
  Param(std::nullopt_t) {}  // NOLINT(google-explicit-constructor): NULL
  Param(std::string_view text) : value_(text), set_(true) {}  // NOLINT(google-explicit-constructor)
  Param(const std::string& text) : Param(std::string_view(text)) {}               // NOLINT
  Param(const char* text) : Param(std::string_view(text)) {}                      // NOLINT
  Param(int64_t n) : owned_(std::to_string(n)), set_(true) { value_ = owned_; }   // NOLINT
  Param(int n) : Param(static_cast<int64_t>(n)) {}                                // NOLINT
  Param(uint64_t n) : owned_(std::to_string(n)), set_(true) { value_ = owned_; }  // NOLINT
  template <class T>
  Param(const std::optional<T>& v) : Param(v ? Param(*v) : Param(std::nullopt)) {}  // NOLINT
  Param(const Param& o) : owned_(o.owned_), set_(o.set_), binary_(o.binary_) {
    value_ = o.value_.data() == o.owned_.data() ? std::string_view(owned_) : o.value_;
  }
  Param& operator=(const Param&) = delete;
  static Param bytes(std::string_view data) {
    Param p(data);
    p.binary_ = true;
    return p;
  }

  const char* data() const { return set_ ? value_.data() : nullptr; }
  int size() const { return static_cast<int>(value_.size()); }
  bool binary() const { return binary_; }

 private:
  std::string_view value_;
  std::string owned_;
  bool set_ = false;
  bool binary_ = false;
};

// The rows a statement returned (or none, for one that returns none). Columns are numbered
// from 0 and read as text, the form PostgreSQL sends them in.
class Rows {
 public:
  explicit Rows(PGresult* result) : result_(result, &PQclear) {}
  int size() const { return PQntuples(result_.get()); }
  bool empty() const { return size() == 0; }
  bool null(int row, int col) const { return PQgetisnull(result_.get(), row, col) != 0; }
  std::string text(int row, int col) const;
  std::string_view view(int row, int col) const;
  int64_t integer(int row, int col) const;
  double real(int row, int col) const;
  bool boolean(int row, int col) const { return view(row, col) == "t"; }
  // A bytea column, decoded.
  std::string bytes(int row, int col) const;
  // The rows an INSERT, UPDATE or DELETE changed.
  int64_t affected() const;

 private:
  std::shared_ptr<PGresult> result_;
};

// SQLSTATEs a caller acts on.
inline constexpr std::string_view kUniqueViolation = "23505";
inline constexpr std::string_view kSerializationFailure = "40001";
inline constexpr std::string_view kDeadlockDetected = "40P01";

// One connection. Not thread-safe: each thread that uses the database has its own, or the owner
// serializes one with a mutex of its own. A connection that broke is reopened by the next
// statement run outside a transaction; inside one, the statement fails, and so does the
// transaction, as it must.
class Connection {
 public:
  // Connects with `conninfo` (a libpq connection string or URI). `name` names the store in
  // errors ("kv store").
  static Result<std::unique_ptr<Connection>> open(const std::string& conninfo, std::string name);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs one statement with parameters ($1, $2, ...). Errors: Errc::kUnavailable when the server
  // cannot be reached, Errc::kConflict for a serialization failure or a deadlock (the
  // transaction may be tried again), Errc::kSystem for the rest, with the server's message and
  // sqlstate() set.
  Result<Rows> exec(const char* sql, std::initializer_list<Param> params = {});
  Result<Rows> exec(const char* sql, const std::vector<Param>& params);
  // Runs statements without parameters ("BEGIN", a schema of several statements).
  Status run(const char* sql);
  // Creates what a store needs: `schema` in one transaction (it takes an advisory lock, so
  // nodes starting together do not race).
  Status create_schema(const char* schema) {
    return transaction([&] { return run(schema); });
  }
  // NOTIFY `channel` with `payload`, delivered when the current transaction commits.
  Status notify(std::string_view channel, std::string_view payload);
  // Runs `body` in a transaction (BEGIN ... COMMIT), again from the start when the server says
  // it may (a serialization failure, a deadlock: SQLSTATE 40001, 40P01), up to `attempts`
  // times. A body that fails rolls back; its own errors are returned as they are.
  Status transaction(const std::function<Status()>& body, int attempts = 5);
  // The SQLSTATE of the last failure, empty when the last statement succeeded.
  const std::string& sqlstate() const { return sqlstate_; }
  const std::string& name() const { return name_; }
  PGconn* raw() const { return conn_; }
  // Whether the connection is up, reconnecting when it is not.
  bool ensure();

 private:
  Connection(PGconn* conn, std::string conninfo, std::string name)
      : conn_(conn), conninfo_(std::move(conninfo)), name_(std::move(name)) {}
  Result<Rows> finish(PGresult* result, const char* sql);
  // Whether a statement may be sent: reconnects outside a transaction.
  bool ready();
  Result<Rows> send(const char* sql, int n, const char* const* values, const int* lengths,
                    const int* formats);

  PGconn* conn_;
  std::string conninfo_;
  std::string name_;
  std::string sqlstate_;
  bool in_transaction_ = false;
};

// Waits for NOTIFY on channels, on a connection of its own and a thread of its own; calls
// `on_notify(channel, payload)` on that thread for each, and `on_connect()` after every
// (re)connection, when notifications sent while it was away are lost and the listener must
// reread what it follows, and after every 30 s without one (once the connection proved alive),
// in case one was lost unseen. Reconnects with a backoff while the server is away.
class Listener {
 public:
  using OnNotify = std::function<void(const std::string& channel, const std::string& payload)>;
  using OnConnect = std::function<void()>;
  Listener(std::string conninfo, std::vector<std::string> channels, OnNotify on_notify,
           OnConnect on_connect);
  ~Listener();  // stops the thread
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Connects and listens once before it returns, so a change made after start() is seen.
  Status start();

 private:
  void loop();
  bool connect();

  std::string conninfo_;
  std::vector<std::string> channels_;
  OnNotify on_notify_;
  OnConnect on_connect_;
  PGconn* conn_ = nullptr;
  int wake_[2] = {-1, -1};  // a pipe: a byte on it stops the thread
  std::thread thread_;
};

// Quotes `name` as an SQL identifier (for LISTEN, which takes no parameters).
std::string quote_identifier(std::string_view name);

}  // namespace ember::postgres
