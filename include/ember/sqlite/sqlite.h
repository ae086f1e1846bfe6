// The SQLite databases of the state directory (the key-value store, usage records, the event
// queue): one way to open them, run SQL, and prepare, bind, step and read statements, with
// errors as values.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "ember/common/result.h"

namespace ember::sqlite {

// One connection and the statements prepared on it, each prepared once and kept. Not
// thread-safe (opened NOMUTEX): each thread that uses a database opens its own connection, or
// the owner serializes one connection with a mutex of its own.
class Connection {
 public:
  // Opens `file`, creating it when missing, in WAL mode with synchronous=FULL: a commit is one
  // append to the log, fsynced, so it survives a power loss, and readers never wait for it.
  // `name` names the database in errors ("kv store").
  static Result<std::unique_ptr<Connection>> open(const std::filesystem::path& file,
                                                  std::string name);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  sqlite3* db() const { return db_; }
  const std::string& name() const { return name_; }
  // Runs statements that return no rows ("BEGIN IMMEDIATE", a schema); a failure is
  // error("run SQL on").
  Status exec(const char* sql);
  // The cached statement for `sql`, which must be a string literal (the cache keys on its
  // address); nullptr when it does not compile.
  sqlite3_stmt* prepare(const char* sql);
  // A failure of `what` ("read", "write to") as Errc::kSystem, with SQLite's message.
  Error error(std::string_view what) const;
  // Whether `table` has `column` (for migrations that add columns).
  bool has_column(std::string_view table, std::string_view column);
  // The rows the last INSERT, UPDATE or DELETE changed.
  int64_t changes() const { return sqlite3_changes(db_); }

 private:
  Connection(sqlite3* db, std::string name) : db_(db), name_(std::move(name)) {}
  sqlite3* db_;
  std::string name_;
  std::unordered_map<const char*, sqlite3_stmt*> cache_;
};

// One use of a cached statement: bound, stepped, then reset and unbound by scope.
class Statement {
 public:
  Statement(Connection& c, const char* sql) : stmt_(c.prepare(sql)) {}
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  explicit operator bool() const { return stmt_ != nullptr; }
  sqlite3_stmt* get() const { return stmt_; }
  // Parameters are numbered from 1.
  void text(int i, std::string_view s);
  // Binds `s` without a copy: it must stay valid and unchanged until the next reset().
  void text_kept(int i, std::string_view s);
  void integer(int i, int64_t v);
  void real(int i, double v);
  void null(int i);
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return sqlite3_step(stmt_); }
  // Ready to be bound and stepped again, with every parameter unbound (NULL): for a statement
  // run once per row of a batch.
  void reset();
  // Columns are numbered from 0.
  std::string column_text(int i) const;
  int64_t column_int(int i) const { return sqlite3_column_int64(stmt_, i); }
  double column_real(int i) const { return sqlite3_column_double(stmt_, i); }
  bool column_null(int i) const { return sqlite3_column_type(stmt_, i) == SQLITE_NULL; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

}  // namespace ember::sqlite
