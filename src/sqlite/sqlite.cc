#include "ember/sqlite/sqlite.h"

#include <fmt/format.h>

#include <cerrno>

namespace ember::sqlite {

Result<std::unique_ptr<Connection>> Connection::open(const std::filesystem::path& file,
                                                     std::string name) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(
      file.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  // Owned from here on: a failed open still gives a handle (or none), to read its message from.
  std::unique_ptr<Connection> c(new Connection(db, std::move(name)));
  Status st = rc == SQLITE_OK ? Status() : Status(c->error("open"));
  if (st) {
    sqlite3_busy_timeout(db, 5000);
    st = c->exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;");
  }
  if (!st) {
    Error e = std::move(st).error();
    e.message += " (" + file.string() + ")";
    return e;
  }
  return c;
}

Connection::~Connection() {
  for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
  sqlite3_close(db_);
}

Status Connection::exec(const char* sql) {
  if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return error("run SQL on");
  return {};
}

sqlite3_stmt* Connection::prepare(const char* sql) {
  auto [it, added] = cache_.try_emplace(sql, nullptr);
  if (added && sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &it->second, nullptr) !=
                   SQLITE_OK) {
    cache_.erase(it);
    return nullptr;
  }
  return it->second;
}

Error Connection::error(std::string_view what) const {
  Error e{Errc::kSystem, fmt::format("{} {}: {}", what, name_, sqlite3_errmsg(db_))};
  // What the operating system said, where SQLite knows: a full disk is told apart from damage.
  switch (sqlite3_errcode(db_)) {
    case SQLITE_FULL:
      e.sys_errno = ENOSPC;
      break;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
      e.sys_errno = sqlite3_system_errno(db_);
      break;
    default:
      break;
  }
  return e;
}

bool Connection::has_column(std::string_view table, std::string_view column) {
  // Not cached: the SQL is built here, and a migration asks once.
  const std::string sql = fmt::format("PRAGMA table_info({})", table);
  sqlite3_stmt* q = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &q, nullptr) != SQLITE_OK) return false;
  bool found = false;
  while (!found && sqlite3_step(q) == SQLITE_ROW) {
    const auto* name = reinterpret_cast<const char*>(sqlite3_column_text(q, 1));
    found = name && column == name;
  }
  sqlite3_finalize(q);
  return found;
}

Statement::~Statement() { reset(); }

void Statement::reset() {
  if (stmt_) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
}

void Statement::text(int i, std::string_view s) {
  sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
}

void Statement::text_kept(int i, std::string_view s) {
  sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
}

void Statement::integer(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }

void Statement::real(int i, double v) { sqlite3_bind_double(stmt_, i, v); }

void Statement::null(int i) { sqlite3_bind_null(stmt_, i); }

std::string Statement::column_text(int i) const {
  const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, i));
  return t ? std::string(t, static_cast<size_t>(sqlite3_column_bytes(stmt_, i))) : std::string();
}

}  // namespace ember::sqlite
