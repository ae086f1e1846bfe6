#include "ember/metering/usage.h"

#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <algorithm>
#include <cmath>

#include "ember/common/clock.h"

namespace ember::metering {

using nlohmann::json;

int64_t billed_ms(std::chrono::nanoseconds duration) {
  const int64_t ns = duration.count();
  const int64_t ms = ns / 1'000'000 + (ns % 1'000'000 > 0 ? 1 : 0);
  return std::max<int64_t>(1, ms);
}

double gb_seconds(int64_t billed, int memory_mb) {
  return static_cast<double>(billed) * memory_mb / (1000.0 * 1024.0);
}

std::string_view outcome_name(Outcome outcome) {
  switch (outcome) {
    case Outcome::kOk:
      return "ok";
    case Outcome::kError:
      return "error";
    case Outcome::kTimeout:
      return "timeout";
    case Outcome::kCrash:
      return "crash";
    case Outcome::kOom:
      return "oom";
    case Outcome::kThrottled:
      return "throttled";
  }
  return "crash";
}

std::optional<Outcome> parse_outcome(std::string_view name) {
  for (Outcome o : kOutcomes) {
    if (outcome_name(o) == name) return o;
  }
  return std::nullopt;
}

json UsageRecord::to_json() const {
  json j{{"time_ms", time_ms},
         {"function", function},
         {"version", version},
         {"request_id", request_id},
         {"start", cold ? "cold" : "warm"},
         {"outcome", outcome_name(outcome)},
         {"queue_ms", queue_us / 1000.0},
         {"init_ms", init_us / 1000.0},
         {"duration_ms", duration_us / 1000.0},
         {"billed_ms", billed_ms},
         {"memory_mb", memory_mb},
         {"gb_seconds", gb_seconds(billed_ms, memory_mb)}};
  if (peak_memory_bytes > 0) j["peak_memory_mb"] = peak_memory_bytes / double(1 << 20);
  if (kv_reads > 0 || kv_writes > 0) {
    j["kv_reads"] = kv_reads;
    j["kv_writes"] = kv_writes;
  }
  return j;
}

void FunctionUsage::add(const FunctionUsage& o) {
  invocations += o.invocations;
  errors += o.errors;
  throttles += o.throttles;
  cold_starts += o.cold_starts;
  duration_us += o.duration_us;
  billed_ms += o.billed_ms;
  mb_ms += o.mb_ms;
  kv_reads += o.kv_reads;
  kv_writes += o.kv_writes;
}

double FunctionUsage::gb_seconds() const { return static_cast<double>(mb_ms) / (1000.0 * 1024.0); }

json FunctionUsage::to_json(const Prices& prices) const {
  json j{{"function", function},       {"invocations", invocations},
         {"errors", errors},           {"throttles", throttles},
         {"cold_starts", cold_starts}, {"duration_ms", duration_us / 1000.0},
         {"billed_ms", billed_ms},     {"gb_seconds", gb_seconds()},
         {"kv_reads", kv_reads},       {"kv_writes", kv_writes}};
  if (prices.per_gb_second > 0 || prices.per_million_requests > 0 ||
      prices.per_million_kv_reads > 0 || prices.per_million_kv_writes > 0) {
    const double compute = gb_seconds() * prices.per_gb_second;
    const double requests = static_cast<double>(invocations) * prices.per_million_requests / 1e6;
    const double kv = (static_cast<double>(kv_reads) * prices.per_million_kv_reads +
                       static_cast<double>(kv_writes) * prices.per_million_kv_writes) /
                      1e6;
    // Money is a decimal string rounded to 10 places (a ten-billionth of the currency unit),
    // as billing APIs write it, never a float such as 6.1875e-07; the total is the sum of the
    // rounded parts, so the figures add up.
    // Amounts are never negative; past 10^8 currency units a double has no ten places left,
    // and the figure is written from it as it is.
    constexpr double kUnits = 1e10, kExactBelow = 1e8;
    auto units = [&](double amount) {
      return std::llround(std::clamp(amount, 0.0, kExactBelow) * kUnits);
    };
    auto money = [&](double amount, int64_t u) {
      if (amount >= kExactBelow) return fmt::format("{:.10f}", amount);
      return fmt::format("{}.{:010d}", u / 10'000'000'000, u % 10'000'000'000);
    };
    const int64_t parts[] = {units(compute), units(requests), units(kv)};
    const double total = compute + requests + kv;
    j["cost"] = json{{"compute", money(compute, parts[0])},
                     {"requests", money(requests, parts[1])},
                     {"kv", money(kv, parts[2])},
                     {"total", money(total, parts[0] + parts[1] + parts[2])}};
  }
  return j;
}

namespace {

Error db_error(sqlite3* db, std::string_view what) {
  Error e = Error::system(what, "usage database", 0);
  e.message = fmt::format("{} usage database: {}", what, sqlite3_errmsg(db));
  return e;
}

// A prepared statement, finalized when it goes out of scope.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) { sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  sqlite3_stmt* get() const { return stmt_; }
  explicit operator bool() const { return stmt_ != nullptr; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS usage (
  time_ms INTEGER NOT NULL,
  function TEXT NOT NULL,
  version INTEGER NOT NULL,
  request_id TEXT NOT NULL,
  cold INTEGER NOT NULL,
  outcome TEXT NOT NULL,
  queue_us INTEGER NOT NULL,
  init_us INTEGER NOT NULL,
  duration_us INTEGER NOT NULL,
  billed_ms INTEGER NOT NULL,
  memory_mb INTEGER NOT NULL,
  peak_memory_bytes INTEGER NOT NULL,
  kv_reads INTEGER NOT NULL DEFAULT 0,
  kv_writes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS usage_by_time ON usage (time_ms);
)sql";

// Databases written before the key-value columns existed get them, counted as 0.
constexpr const char* kAddKvColumns =
    "ALTER TABLE usage ADD COLUMN kv_reads INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE usage ADD COLUMN kv_writes INTEGER NOT NULL DEFAULT 0;";

bool has_column(sqlite3* db, const char* table, std::string_view column) {
  sqlite3_stmt* q = nullptr;
  const std::string sql = fmt::format("PRAGMA table_info({})", table);
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &q, nullptr) != SQLITE_OK) return false;
  bool found = false;
  while (!found && sqlite3_step(q) == SQLITE_ROW) {
    const unsigned char* name = sqlite3_column_text(q, 1);
    found = name && column == reinterpret_cast<const char*>(name);
  }
  sqlite3_finalize(q);
  return found;
}

std::string text_column(sqlite3_stmt* s, int i) {
  const unsigned char* t = sqlite3_column_text(s, i);
  return t ? reinterpret_cast<const char*>(t) : "";
}

}  // namespace

Result<std::unique_ptr<UsageStore>> UsageStore::open(const std::filesystem::path& file,
                                                     std::chrono::milliseconds flush_interval,
                                                     int retention_days) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(file.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    Error e = db_error(db, "open");
    e.message += " (" + file.string() + ")";
    sqlite3_close(db);
    return e;
  }
  sqlite3_busy_timeout(db, 5000);
  // WAL: a commit is one append to the log. FULL: each commit is fsynced, which costs one
  // fsync per flush interval, so records survive a power loss too, not just a crash.
  const char* setup = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;";
  char* message = nullptr;
  if (sqlite3_exec(db, setup, nullptr, nullptr, &message) != SQLITE_OK ||
      sqlite3_exec(db, kSchema, nullptr, nullptr, &message) != SQLITE_OK ||
      (!has_column(db, "usage", "kv_reads") &&
       sqlite3_exec(db, kAddKvColumns, nullptr, nullptr, &message) != SQLITE_OK)) {
    Error e = Error::system("create", "usage database", 0);
    e.message = fmt::format("create usage database {}: {}", file.string(),
                            message ? message : sqlite3_errmsg(db));
    sqlite3_free(message);
    sqlite3_close(db);
    return e;
  }
  std::unique_ptr<UsageStore> store(new UsageStore(db, flush_interval, retention_days));
  if (auto pruned = store->prune(system_clock().wall_ms()); pruned && *pruned > 0) {
    spdlog::info("metering: removed {} usage records older than {} days", *pruned, retention_days);
  }
  return store;
}

UsageStore::UsageStore(sqlite3* db, std::chrono::milliseconds flush_interval, int retention_days)
    : db_(db), flush_interval_(flush_interval), retention_days_(retention_days) {
  writer_ = std::thread([this] { writer(); });
}

UsageStore::~UsageStore() {
  {
    std::lock_guard lock(buffer_mutex_);
    stop_ = true;
  }
  wake_.notify_one();
  writer_.join();
  if (auto s = flush(); !s) spdlog::error("metering: {}", s.error().message);
  sqlite3_close(db_);
}

void UsageStore::append(UsageRecord record) {
  std::lock_guard lock(buffer_mutex_);
  buffer_.push_back(std::move(record));
}

Status UsageStore::flush() {
  std::lock_guard db_lock(db_mutex_);
  std::vector<UsageRecord> batch;
  {
    std::lock_guard lock(buffer_mutex_);
    batch.swap(buffer_);
    // The next interval likely sees as many calls: no regrowth on the event loop's path.
    buffer_.reserve(batch.size());
  }
  return write(batch);
}

Status UsageStore::write(std::vector<UsageRecord>& batch) {
  if (batch.empty()) return {};
  if (sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return db_error(db_, "begin a write to the");
  }
  Statement insert(db_,
                   "INSERT INTO usage (time_ms, function, version, request_id, cold, outcome,"
                   " queue_us, init_us, duration_us, billed_ms, memory_mb, peak_memory_bytes,"
                   " kv_reads, kv_writes)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)");
  if (!insert) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return db_error(db_, "prepare an insert into the");
  }
  sqlite3_stmt* s = insert.get();
  for (const auto& r : batch) {
    sqlite3_bind_int64(s, 1, r.time_ms);
    sqlite3_bind_text(s, 2, r.function.data(), static_cast<int>(r.function.size()), SQLITE_STATIC);
    sqlite3_bind_int(s, 3, r.version);
    sqlite3_bind_text(s, 4, r.request_id.data(), static_cast<int>(r.request_id.size()),
                      SQLITE_STATIC);
    sqlite3_bind_int(s, 5, r.cold ? 1 : 0);
    const std::string_view outcome = outcome_name(r.outcome);
    sqlite3_bind_text(s, 6, outcome.data(), static_cast<int>(outcome.size()), SQLITE_STATIC);
    sqlite3_bind_int64(s, 7, r.queue_us);
    sqlite3_bind_int64(s, 8, r.init_us);
    sqlite3_bind_int64(s, 9, r.duration_us);
    sqlite3_bind_int64(s, 10, r.billed_ms);
    sqlite3_bind_int(s, 11, r.memory_mb);
    sqlite3_bind_int64(s, 12, static_cast<int64_t>(r.peak_memory_bytes));
    sqlite3_bind_int64(s, 13, r.kv_reads);
    sqlite3_bind_int64(s, 14, r.kv_writes);
    if (sqlite3_step(s) != SQLITE_DONE) {
      Error e = db_error(db_, "insert into the");
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      // Kept for the next attempt: a full disk may clear.
      std::lock_guard lock(buffer_mutex_);
      buffer_.insert(buffer_.begin(), std::make_move_iterator(batch.begin()),
                     std::make_move_iterator(batch.end()));
      batch.clear();
      return e;
    }
    sqlite3_reset(s);
  }
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    Error e = db_error(db_, "commit to the");
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return e;
  }
  batch.clear();
  return {};
}

void UsageStore::writer() {
  auto last_prune = std::chrono::steady_clock::now();
  std::unique_lock lock(buffer_mutex_);
  while (!stop_) {
    wake_.wait_for(lock, flush_interval_, [this] { return stop_; });
    if (stop_) break;
    lock.unlock();
    if (auto s = flush(); !s) spdlog::error("metering: {}", s.error().message);
    if (std::chrono::steady_clock::now() - last_prune > std::chrono::hours(1)) {
      last_prune = std::chrono::steady_clock::now();
      (void)prune(system_clock().wall_ms());
    }
    lock.lock();
  }
}

Result<std::vector<FunctionUsage>> UsageStore::totals(int64_t from_ms, int64_t to_ms,
                                                      const std::string& function) {
  if (auto s = flush(); !s) return s.error();
  std::lock_guard lock(db_mutex_);
  Statement q(db_,
              "SELECT function,"
              " SUM(outcome <> 'throttled'),"
              " SUM(outcome IN ('error', 'timeout', 'crash', 'oom')),"
              " SUM(outcome = 'throttled'),"
              " SUM(cold), SUM(duration_us), SUM(billed_ms), SUM(billed_ms * memory_mb),"
              " SUM(kv_reads), SUM(kv_writes)"
              " FROM usage WHERE time_ms >= ?1 AND time_ms < ?2 AND (?3 = '' OR function = ?3)"
              " GROUP BY function ORDER BY function");
  if (!q) return db_error(db_, "query the");
  sqlite3_bind_int64(q.get(), 1, from_ms);
  sqlite3_bind_int64(q.get(), 2, to_ms);
  sqlite3_bind_text(q.get(), 3, function.data(), static_cast<int>(function.size()), SQLITE_STATIC);
  std::vector<FunctionUsage> out;
  int rc;
  while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
    FunctionUsage u;
    u.function = text_column(q.get(), 0);
    u.invocations = sqlite3_column_int64(q.get(), 1);
    u.errors = sqlite3_column_int64(q.get(), 2);
    u.throttles = sqlite3_column_int64(q.get(), 3);
    u.cold_starts = sqlite3_column_int64(q.get(), 4);
    u.duration_us = sqlite3_column_int64(q.get(), 5);
    u.billed_ms = sqlite3_column_int64(q.get(), 6);
    u.mb_ms = sqlite3_column_int64(q.get(), 7);
    u.kv_reads = sqlite3_column_int64(q.get(), 8);
    u.kv_writes = sqlite3_column_int64(q.get(), 9);
    out.push_back(std::move(u));
  }
  if (rc != SQLITE_DONE) return db_error(db_, "read the");
  return out;
}

Result<std::vector<UsageRecord>> UsageStore::records(const std::string& function, int64_t from_ms,
                                                     int64_t to_ms, int limit) {
  if (auto s = flush(); !s) return s.error();
  std::lock_guard lock(db_mutex_);
  Statement q(
      db_,
      "SELECT time_ms, function, version, request_id, cold, outcome, queue_us, init_us,"
      " duration_us, billed_ms, memory_mb, peak_memory_bytes, kv_reads, kv_writes FROM usage"
      " WHERE function = ?1 AND time_ms >= ?2 AND time_ms < ?3"
      " ORDER BY time_ms DESC, rowid DESC LIMIT ?4");
  if (!q) return db_error(db_, "query the");
  sqlite3_bind_text(q.get(), 1, function.data(), static_cast<int>(function.size()), SQLITE_STATIC);
  sqlite3_bind_int64(q.get(), 2, from_ms);
  sqlite3_bind_int64(q.get(), 3, to_ms);
  sqlite3_bind_int(q.get(), 4, limit);
  std::vector<UsageRecord> out;
  int rc;
  while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
    sqlite3_stmt* s = q.get();
    UsageRecord r;
    r.time_ms = sqlite3_column_int64(s, 0);
    r.function = text_column(s, 1);
    r.version = sqlite3_column_int(s, 2);
    r.request_id = text_column(s, 3);
    r.cold = sqlite3_column_int(s, 4) != 0;
    // Written by this code from outcome_name(); anything else in the column reads as a crash.
    r.outcome = parse_outcome(text_column(s, 5)).value_or(Outcome::kCrash);
    r.queue_us = sqlite3_column_int64(s, 6);
    r.init_us = sqlite3_column_int64(s, 7);
    r.duration_us = sqlite3_column_int64(s, 8);
    r.billed_ms = sqlite3_column_int64(s, 9);
    r.memory_mb = sqlite3_column_int(s, 10);
    r.peak_memory_bytes = static_cast<uint64_t>(sqlite3_column_int64(s, 11));
    r.kv_reads = sqlite3_column_int64(s, 12);
    r.kv_writes = sqlite3_column_int64(s, 13);
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return db_error(db_, "read the");
  return out;
}

Result<int64_t> UsageStore::prune(int64_t now_ms) {
  if (retention_days_ <= 0) return int64_t{0};
  std::lock_guard lock(db_mutex_);
  Statement d(db_, "DELETE FROM usage WHERE time_ms < ?1");
  if (!d) return db_error(db_, "prune the");
  sqlite3_bind_int64(d.get(), 1, now_ms - int64_t{retention_days_} * 86'400'000);
  if (sqlite3_step(d.get()) != SQLITE_DONE) return db_error(db_, "prune the");
  return static_cast<int64_t>(sqlite3_changes(db_));
}

}  // namespace ember::metering
