#include "ember/metering/usage.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "ember/common/clock.h"
#include "ember/sqlite/sqlite.h"

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

}  // namespace

Result<std::unique_ptr<UsageStore>> UsageStore::open(const std::filesystem::path& file,
                                                     std::chrono::milliseconds flush_interval,
                                                     int retention_days) {
  // WAL with synchronous=FULL (as every sqlite::Connection): each commit is fsynced, which
  // costs one fsync per flush interval, so records survive a power loss too, not just a crash.
  auto db = sqlite::Connection::open(file, "usage database");
  if (!db) return db.error();
  sqlite::Connection& c = **db;
  Status st = c.exec(kSchema);
  if (st && !c.has_column("usage", "kv_reads")) st = c.exec(kAddKvColumns);
  if (!st) {
    Error e = c.error("create");
    e.message += " (" + file.string() + ")";
    return e;
  }
  std::unique_ptr<UsageStore> store(new UsageStore(std::move(*db), flush_interval, retention_days));
  if (auto pruned = store->prune(system_clock().wall_ms()); pruned && *pruned > 0) {
    spdlog::info("metering: removed {} usage records older than {} days", *pruned, retention_days);
  }
  return store;
}

UsageStore::UsageStore(std::unique_ptr<sqlite::Connection> db,
                       std::chrono::milliseconds flush_interval, int retention_days)
    : db_(std::move(db)), flush_interval_(flush_interval), retention_days_(retention_days) {
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
  // On any failure the batch goes back to the buffer for the next attempt: a full disk clears.
  auto fail = [&](Error e) -> Status {
    (void)db_->exec("ROLLBACK");
    keep(batch);
    return e;
  };
  if (!db_->exec("BEGIN")) return fail(db_->error("begin a write to the"));
  sqlite::Statement insert(
      *db_,
      "INSERT INTO usage (time_ms, function, version, request_id, cold, outcome,"
      " queue_us, init_us, duration_us, billed_ms, memory_mb, peak_memory_bytes,"
      " kv_reads, kv_writes)"
      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)");
  if (!insert) return fail(db_->error("prepare an insert into the"));
  // The batch outlives every row's step: its strings are bound without a copy.
  for (const auto& r : batch) {
    insert.integer(1, r.time_ms);
    insert.text_kept(2, r.function);
    insert.integer(3, r.version);
    insert.text_kept(4, r.request_id);
    insert.integer(5, r.cold ? 1 : 0);
    insert.text_kept(6, outcome_name(r.outcome));
    insert.integer(7, r.queue_us);
    insert.integer(8, r.init_us);
    insert.integer(9, r.duration_us);
    insert.integer(10, r.billed_ms);
    insert.integer(11, r.memory_mb);
    insert.integer(12, static_cast<int64_t>(r.peak_memory_bytes));
    insert.integer(13, r.kv_reads);
    insert.integer(14, r.kv_writes);
    if (insert.step() != SQLITE_DONE) {
      Error e = db_->error("insert into the");
      insert.reset();
      return fail(std::move(e));
    }
    insert.reset();
  }
  if (!db_->exec("COMMIT")) return fail(db_->error("commit to the"));
  batch.clear();
  return {};
}

void UsageStore::keep(std::vector<UsageRecord>& batch) {
  std::lock_guard lock(buffer_mutex_);
  buffer_.insert(buffer_.begin(), std::make_move_iterator(batch.begin()),
                 std::make_move_iterator(batch.end()));
  batch.clear();
  // Bounded: past the limit the oldest records go, counted and logged.
  if (buffer_.size() > kMaxBuffered) {
    const size_t excess = buffer_.size() - kMaxBuffered;
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(excess));
    dropped_ += excess;
  }
}

void UsageStore::report(const Status& flushed) {
  if (flushed) {
    if (failures_ > 0) {
      spdlog::info("metering: usage records are written again, after {} failed attempts",
                   failures_);
    }
    failures_ = 0;
    return;
  }
  ++failures_;
  uint64_t suppressed = 0;
  if (!failure_log_.allow(suppressed)) return;
  uint64_t dropped = 0;
  size_t waiting = 0;
  {
    std::lock_guard lock(buffer_mutex_);
    dropped = dropped_;
    waiting = buffer_.size();
  }
  spdlog::error(
      "metering: {}; {} usage records wait in memory for the next attempt, {} dropped over the "
      "limit of {} ({} similar messages suppressed)",
      flushed.error().message, waiting, dropped, kMaxBuffered, suppressed);
}

void UsageStore::writer() {
  auto last_prune = std::chrono::steady_clock::now();
  std::unique_lock lock(buffer_mutex_);
  while (!stop_) {
    wake_.wait_for(lock, flush_interval_, [this] { return stop_; });
    if (stop_) break;
    lock.unlock();
    report(flush());
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
  sqlite::Statement q(
      *db_,
      "SELECT function,"
      " SUM(outcome <> 'throttled'),"
      " SUM(outcome IN ('error', 'timeout', 'crash', 'oom')),"
      " SUM(outcome = 'throttled'),"
      " SUM(cold), SUM(duration_us), SUM(billed_ms), SUM(billed_ms * memory_mb),"
      " SUM(kv_reads), SUM(kv_writes)"
      " FROM usage WHERE time_ms >= ?1 AND time_ms < ?2 AND (?3 = '' OR function = ?3)"
      " GROUP BY function ORDER BY function");
  if (!q) return db_->error("query the");
  q.integer(1, from_ms);
  q.integer(2, to_ms);
  q.text(3, function);
  std::vector<FunctionUsage> out;
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) {
    FunctionUsage u;
    u.function = q.column_text(0);
    u.invocations = q.column_int(1);
    u.errors = q.column_int(2);
    u.throttles = q.column_int(3);
    u.cold_starts = q.column_int(4);
    u.duration_us = q.column_int(5);
    u.billed_ms = q.column_int(6);
    u.mb_ms = q.column_int(7);
    u.kv_reads = q.column_int(8);
    u.kv_writes = q.column_int(9);
    out.push_back(std::move(u));
  }
  if (rc != SQLITE_DONE) return db_->error("read the");
  return out;
}

Result<std::vector<UsageRecord>> UsageStore::records(const std::string& function, int64_t from_ms,
                                                     int64_t to_ms, int limit) {
  if (auto s = flush(); !s) return s.error();
  std::lock_guard lock(db_mutex_);
  sqlite::Statement q(
      *db_,
      "SELECT time_ms, function, version, request_id, cold, outcome, queue_us, init_us,"
      " duration_us, billed_ms, memory_mb, peak_memory_bytes, kv_reads, kv_writes FROM usage"
      " WHERE function = ?1 AND time_ms >= ?2 AND time_ms < ?3"
      " ORDER BY time_ms DESC, rowid DESC LIMIT ?4");
  if (!q) return db_->error("query the");
  q.text(1, function);
  q.integer(2, from_ms);
  q.integer(3, to_ms);
  q.integer(4, limit);
  std::vector<UsageRecord> out;
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) {
    UsageRecord r;
    r.time_ms = q.column_int(0);
    r.function = q.column_text(1);
    r.version = static_cast<int>(q.column_int(2));
    r.request_id = q.column_text(3);
    r.cold = q.column_int(4) != 0;
    // Written by this code from outcome_name(); anything else in the column reads as a crash.
    r.outcome = parse_outcome(q.column_text(5)).value_or(Outcome::kCrash);
    r.queue_us = q.column_int(6);
    r.init_us = q.column_int(7);
    r.duration_us = q.column_int(8);
    r.billed_ms = q.column_int(9);
    r.memory_mb = static_cast<int>(q.column_int(10));
    r.peak_memory_bytes = static_cast<uint64_t>(q.column_int(11));
    r.kv_reads = q.column_int(12);
    r.kv_writes = q.column_int(13);
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return db_->error("read the");
  return out;
}

Result<int64_t> UsageStore::prune(int64_t now_ms) {
  if (retention_days_ <= 0) return int64_t{0};
  std::lock_guard lock(db_mutex_);
  sqlite::Statement d(*db_, "DELETE FROM usage WHERE time_ms < ?1");
  if (!d) return db_->error("prune the");
  d.integer(1, now_ms - int64_t{retention_days_} * 86'400'000);
  if (d.step() != SQLITE_DONE) return db_->error("prune the");
  return db_->changes();
}

}  // namespace ember::metering
