// Metering: one usage record per invocation, kept durably in a SQLite database in the state
// directory, and the per-function totals an operator bills from.
//
// Records are appended from the event loop into a buffer; a writer thread commits the buffer
// in one transaction every flush interval (1 s by default), so a crash of the daemon loses at
// most that interval of records and the event loop never waits for the disk.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ember/common/log.h"
#include "ember/common/result.h"

namespace ember::sqlite {
class Connection;
}

namespace ember::metering {

// Billing rounds a call's duration up to the next millisecond, and a call that ran bills at
// least one.
int64_t billed_ms(std::chrono::nanoseconds duration);
// GB-seconds of `billed` milliseconds at `memory_mb` of configured memory (1 GB = 1024 MB).
double gb_seconds(int64_t billed, int memory_mb);

// How a call ended, as metering counts it. Spelled as text only in the usage store's column,
// its JSON records and the metrics' label (outcome_name).
enum class Outcome { kOk, kError, kTimeout, kCrash, kOom, kThrottled };
inline constexpr Outcome kOutcomes[] = {Outcome::kOk,    Outcome::kError, Outcome::kTimeout,
                                        Outcome::kCrash, Outcome::kOom,   Outcome::kThrottled};
// "ok", "error", "timeout", "crash", "oom", "throttled".
std::string_view outcome_name(Outcome outcome);
// The outcome a name spells; nullopt for another string.
std::optional<Outcome> parse_outcome(std::string_view name);

struct UsageRecord {
  int64_t time_ms = 0;  // wall clock when the call ended
  std::string function;
  int version = 0;
  std::string request_id;
  bool cold = false;
  Outcome outcome = Outcome::kOk;
  int64_t queue_us = 0;
  int64_t init_us = 0;  // cold starts only
  int64_t duration_us = 0;
  int64_t billed_ms = 0;  // 0 for calls that never ran (throttled, init failed)
  int memory_mb = 0;
  uint64_t peak_memory_bytes = 0;  // the instance's peak so far; 0 when the cgroup does not say
  int64_t kv_reads = 0;            // key-value gets and lists the call made
  int64_t kv_writes = 0;           // puts, increments and deletes
  nlohmann::json to_json() const;
};

struct Prices {
  double per_gb_second = 0;         // currency units; 0: no price
  double per_million_requests = 0;  // idem
  double per_million_kv_reads = 0;
  double per_million_kv_writes = 0;
};

// Totals of one function over a time range.
struct FunctionUsage {
  std::string function;
  int64_t invocations = 0;  // calls that reached an instance or failed to start one
  int64_t errors = 0;       // error, timeout, crash, oom
  int64_t throttles = 0;    // refused: never ran, never billed
  int64_t cold_starts = 0;
  int64_t duration_us = 0;
  int64_t billed_ms = 0;
  int64_t mb_ms = 0;  // sum of billed_ms × memory_mb: GB-seconds without rounding
  int64_t kv_reads = 0;
  int64_t kv_writes = 0;
  double gb_seconds() const;
  // Adds `other`'s counts to this one's.
  void add(const FunctionUsage& other);
  // With a "cost" object when a price is set.
  nlohmann::json to_json(const Prices& prices) const;
};

// Owns the database connection and the writer thread. append() may be called from any thread;
// the other methods too (they take the database lock).
class UsageStore {
 public:
  static Result<std::unique_ptr<UsageStore>> open(const std::filesystem::path& file,
                                                  std::chrono::milliseconds flush_interval,
                                                  int retention_days);
  ~UsageStore();  // commits what is buffered, then stops the writer
  UsageStore(const UsageStore&) = delete;
  UsageStore& operator=(const UsageStore&) = delete;

  void append(UsageRecord record);
  // Commits every buffered record now.
  Status flush();
  // Per-function totals of the records with from_ms <= time_ms < to_ms, by function name;
  // `function` empty: every function. Flushes first, so every call that has ended is counted.
  Result<std::vector<FunctionUsage>> totals(int64_t from_ms, int64_t to_ms,
                                            const std::string& function = {});
  // The newest `limit` records of a function in the range, newest first.
  Result<std::vector<UsageRecord>> records(const std::string& function, int64_t from_ms,
                                           int64_t to_ms, int limit);
  // Deletes records older than the retention; returns how many.
  Result<int64_t> prune(int64_t now_ms);

 private:
  UsageStore(std::unique_ptr<sqlite::Connection> db, std::chrono::milliseconds flush_interval,
             int retention_days);
  Status write(std::vector<UsageRecord>& batch);  // with db_mutex_ held
  // Puts a batch that could not be written back in front of the buffer, within kMaxBuffered.
  void keep(std::vector<UsageRecord>& batch);
  // Logs a failed flush of the writer thread, at most once a minute; and the recovery.
  void report(const Status& flushed);
  void writer();

  // Records kept in memory while the database cannot be written (a full disk), at most: about
  // 40 MB. Past it the oldest are dropped, counted in dropped_.
  static constexpr size_t kMaxBuffered = 200'000;

  // Not thread-safe itself (one connection per thread is the rule): db_mutex_ serializes it.
  std::unique_ptr<sqlite::Connection> db_;
  std::chrono::milliseconds flush_interval_;
  int retention_days_;
  std::mutex db_mutex_;  // the connection
  std::mutex buffer_mutex_;
  std::condition_variable wake_;
  std::vector<UsageRecord> buffer_;
  uint64_t dropped_ = 0;  // with buffer_mutex_
  bool stop_ = false;
  // The writer thread's own.
  uint64_t failures_ = 0;
  LogRateLimiter failure_log_{1.0 / 60, 1};
  std::thread writer_;
};

}  // namespace ember::metering
