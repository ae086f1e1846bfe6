#include "ember/postgres/postgres.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>

namespace ember::postgres {

namespace {

std::string trimmed(const char* message) {
  std::string s = message ? message : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Opens a connection and says what went wrong when it could not. Unless the connection string
// says otherwise, a connection attempt gives up after 10 s, and TCP keepalives find a server
// that vanished without closing the connection within about a minute.
Result<PGconn*> connect(const std::string& conninfo, const std::string& name) {
  // Earlier keywords are defaults: the expanded connection string (dbname) overrides them.
  const char* keywords[] = {
      "connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
      "dbname",          nullptr};
  const char* values[] = {"10", "1", "30", "10", "3", conninfo.c_str(), nullptr};
  PGconn* conn = PQconnectdbParams(keywords, values, 1);
  if (conn == nullptr) return Error{Errc::kUnavailable, "connect to " + name + ": out of memory"};
  if (PQstatus(conn) != CONNECTION_OK) {
    Error e{Errc::kUnavailable,
            fmt::format("connect to {}: {}", name, trimmed(PQerrorMessage(conn)))};
    PQfinish(conn);
    return e;
  }
  // Notices ("relation already exists, skipping") are not news to a running daemon.
  PQsetNoticeProcessor(
      conn, [](void*, const char*) {}, nullptr);
  // Times are UTC, and a statement never waits forever on a lock another node holds.
  PGresult* r = PQexec(conn, "SET TIME ZONE 'UTC'; SET lock_timeout = '30s'");
  PQclear(r);
  return conn;
}

}  // namespace

// ---- Rows ----

std::string_view Rows::view(int row, int col) const {
  return {PQgetvalue(result_.get(), row, col),
          static_cast<size_t>(PQgetlength(result_.get(), row, col))};
}

std::string Rows::text(int row, int col) const { return std::string(view(row, col)); }

int64_t Rows::integer(int row, int col) const {
  std::string_view v = view(row, col);
  int64_t n = 0;
  std::from_chars(v.data(), v.data() + v.size(), n);
  return n;
}

double Rows::real(int row, int col) const {
  return std::strtod(PQgetvalue(result_.get(), row, col), nullptr);
}

std::string Rows::bytes(int row, int col) const {
  size_t n = 0;
  unsigned char* raw = PQunescapeBytea(
      reinterpret_cast<const unsigned char*>(PQgetvalue(result_.get(), row, col)), &n);
  if (raw == nullptr) return {};
  std::string out(reinterpret_cast<const char*>(raw), n);
  PQfreemem(raw);
  return out;
}

int64_t Rows::affected() const {
  const char* n = PQcmdTuples(result_.get());
  return n && *n ? std::strtoll(n, nullptr, 10) : 0;
}

// ---- Connection ----

Result<std::unique_ptr<Connection>> Connection::open(const std::string& conninfo,
                                                     std::string name) {
  auto conn = connect(conninfo, name);
  if (!conn) return conn.error();
  return std::unique_ptr<Connection>(new Connection(*conn, conninfo, std::move(name)));
}

Connection::~Connection() {
  if (conn_) PQfinish(conn_);
}

bool Connection::ensure() {
  if (conn_ && PQstatus(conn_) == CONNECTION_OK) return true;
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
  auto conn = connect(conninfo_, name_);
  if (!conn) return false;
  conn_ = *conn;
  spdlog::info("postgres: {} reconnected", name_);
  return true;
}

Result<Rows> Connection::finish(PGresult* result, const char* sql) {
  sqlstate_.clear();
  Rows rows(result);
  const ExecStatusType status = result ? PQresultStatus(result) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return rows;
  const char* state = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  sqlstate_ = state ? state : "";
  std::string message = trimmed(result ? PQresultErrorMessage(result) : PQerrorMessage(conn_));
  if (message.empty()) message = trimmed(PQerrorMessage(conn_));
  Error e{Errc::kSystem, fmt::format("{}: {}", name_, message)};
  if (PQstatus(conn_) != CONNECTION_OK || sqlstate_.starts_with("08") ||
      sqlstate_.starts_with("57P")) {
    e.code = Errc::kUnavailable;  // the server went away or is shutting down
  } else if (sqlstate_ == kSerializationFailure || sqlstate_ == kDeadlockDetected) {
    e.code = Errc::kConflict;
  } else if (sqlstate_ == "53100") {
    e.sys_errno = ENOSPC;  // disk_full: told apart from damage, as for the embedded store
  }
  if (e.code == Errc::kSystem) spdlog::debug("postgres: {} failed: {}", sql, e.message);
  return e;
}

bool Connection::ready() {
  // Outside a transaction a broken connection is reopened first; inside one the statement
  // fails, because what the transaction did so far is gone with the old connection.
  if (PQstatus(conn_) == CONNECTION_OK) return true;
  if (!in_transaction_ && ensure()) return true;
  sqlstate_ = "08006";
  return false;
}

Result<Rows> Connection::send(const char* sql, int n, const char* const* values, const int* lengths,
                              const int* formats) {
  if (!ready()) return Error{Errc::kUnavailable, fmt::format("{}: cannot reach the server", name_)};
  auto rows = finish(PQexecParams(conn_, sql, n, nullptr, values, lengths, formats, 0), sql);
  // An idle connection learns that the server restarted only when it is used: outside a
  // transaction, the statement goes again on a new connection.
  if (!rows && PQstatus(conn_) != CONNECTION_OK && !in_transaction_ && ensure()) {
    rows = finish(PQexecParams(conn_, sql, n, nullptr, values, lengths, formats, 0), sql);
  }
  return rows;
}

Result<Rows> Connection::exec(const char* sql, const std::vector<Param>& params) {
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  for (const Param& p : params) {
    values.push_back(p.data());
    lengths.push_back(p.size());
    formats.push_back(p.binary() ? 1 : 0);
  }
  return send(sql, static_cast<int>(params.size()), values.data(), lengths.data(), formats.data());
}

Result<Rows> Connection::exec(const char* sql, std::initializer_list<Param> params) {
  constexpr size_t kMax = 16;  // on the stack; more go through a vector
  if (params.size() > kMax) return exec(sql, std::vector<Param>(params));
  const char* values[kMax];
  int lengths[kMax], formats[kMax];
  int i = 0;
  for (const Param& p : params) {
    values[i] = p.data();
    lengths[i] = p.size();
    formats[i] = p.binary() ? 1 : 0;
    ++i;
  }
  return send(sql, i, values, lengths, formats);
}

Status Connection::run(const char* sql) {
  if (!ready()) return Error{Errc::kUnavailable, fmt::format("{}: cannot reach the server", name_)};
  auto r = finish(PQexec(conn_, sql), sql);
  // As in send(); "BEGIN" is sent outside a transaction too.
  if (!r && PQstatus(conn_) != CONNECTION_OK && !in_transaction_ && ensure()) {
    r = finish(PQexec(conn_, sql), sql);
  }
  if (!r) return r.error();
  return {};
}

Status Connection::notify(std::string_view channel, std::string_view payload) {
  auto r = exec("SELECT pg_notify($1, $2)", {channel, payload});
  if (!r) return r.error();
  return {};
}

Status Connection::transaction(const std::function<Status()>& body, int attempts) {
  Status st;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    st = run("BEGIN");
    in_transaction_ = st.ok();
    if (st) st = body();
    if (st) st = run("COMMIT");
    if (!st && in_transaction_) (void)run("ROLLBACK");  // fails when nothing is left to undo
    in_transaction_ = false;
    if (st) return st;
    // Again only when the server asked for it; a conflict of the body's own is its answer.
    if (sqlstate_ != kSerializationFailure && sqlstate_ != kDeadlockDetected) return st;
  }
  return st;
}

// ---- Listener ----

std::string quote_identifier(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

Listener::Listener(std::string conninfo, std::vector<std::string> channels, OnNotify on_notify,
                   OnConnect on_connect)
    : conninfo_(std::move(conninfo)),
      channels_(std::move(channels)),
      on_notify_(std::move(on_notify)),
      on_connect_(std::move(on_connect)) {}

Listener::~Listener() {
  if (wake_[1] >= 0) {
    char b = 0;
    (void)!::write(wake_[1], &b, 1);
  }
  if (thread_.joinable()) thread_.join();
  if (conn_) PQfinish(conn_);
  for (int fd : wake_) {
    if (fd >= 0) ::close(fd);
  }
}

bool Listener::connect() {
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
  auto conn = postgres::connect(conninfo_, "the notification listener");
  if (!conn) return false;
  std::string sql;
  for (const auto& ch : channels_) sql += "LISTEN " + quote_identifier(ch) + ";";
  PGresult* r = PQexec(*conn, sql.c_str());
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  PQclear(r);
  if (!ok) {
    PQfinish(*conn);
    return false;
  }
  conn_ = *conn;
  return true;
}

Status Listener::start() {
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) return Error::system("pipe", "", errno);
  if (!connect()) {
    return Error{Errc::kUnavailable, "listen for changes: cannot reach the PostgreSQL server"};
  }
  if (on_connect_) on_connect_();
  thread_ = std::thread([this] { loop(); });
  return {};
}

namespace {
constexpr int64_t kResyncMs = 30'000;
}  // namespace

void Listener::loop() {
  int backoff_ms = 100;
  while (true) {
    if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
      pollfd p{wake_[0], POLLIN, 0};
      if (::poll(&p, 1, backoff_ms) > 0) return;
      if (!connect()) {
        backoff_ms = std::min(backoff_ms * 2, 5000);
        continue;
      }
      backoff_ms = 100;
      spdlog::info("postgres: listening for changes again");
      // What changed while the connection was down was not notified: reread it.
      if (on_connect_) on_connect_();
    }
    pollfd fds[2] = {{wake_[0], POLLIN, 0}, {PQsocket(conn_), POLLIN, 0}};
    const int ready = ::poll(fds, 2, static_cast<int>(kResyncMs));
    if (ready < 0 && errno != EINTR) return;
    if (fds[0].revents) return;
    if (ready == 0) {
      // Quiet for a while: check that the connection is alive, and reread what is followed,
      // in case a notification was lost with a connection that died silently.
      PGresult* r = PQexec(conn_, "SELECT 1");
      const bool alive = PQresultStatus(r) == PGRES_TUPLES_OK;
      PQclear(r);
      if (!alive) {
        PQfinish(conn_);
        conn_ = nullptr;
        continue;
      }
      if (on_connect_) on_connect_();
      continue;
    }
    if (PQconsumeInput(conn_) == 0) {
      spdlog::warn("postgres: the notification listener lost its connection: {}",
                   trimmed(PQerrorMessage(conn_)));
      PQfinish(conn_);
      conn_ = nullptr;
      continue;
    }
    while (PGnotify* n = PQnotifies(conn_)) {
      std::string channel = n->relname, payload = n->extra ? n->extra : "";
      PQfreemem(n);
      on_notify_(channel, payload);
    }
  }
}

}  // namespace ember::postgres
