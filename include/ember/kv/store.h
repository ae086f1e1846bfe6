// The key-value store functions keep their state in (`context.kv`): keys in namespaces, JSON
// values, a version per key, optional time to live, and atomic counters. Store is what a backend
// implements: the embedded SQLite one, or the PostgreSQL one several nodes share. Its core is
// asynchronous: execute() takes a request and calls back on a thread of the store's, so the event
// loop never waits for a disk; a write is acknowledged only once it is durable. The blocking
// methods wrap execute() for tools and tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ember/common/clock.h"
#include "ember/common/result.h"

namespace ember::kv {

struct Limits {
  size_t max_key_bytes = 1024;
  size_t max_value_bytes = 400 * 1024;
  uint64_t namespace_quota_bytes = uint64_t{100} << 20;  // keys and values together
  size_t max_list = 1000;                                // items in one page of list()
  size_t max_page_bytes = 1 << 20;  // keys and values in one page, past its first item
};

struct Item {
  std::string key;
  std::string value;  // JSON text
  uint64_t version = 0;
  std::optional<int64_t> expires_ms;  // wall clock; none: never expires
};

struct PutOptions {
  std::optional<int64_t> ttl_s;  // the item expires this many seconds after the write
  // Write only when the key's current version is this one; 0: only when the key is absent.
  std::optional<uint64_t> if_version;
};

struct Page {
  std::vector<Item> items;  // in key order
  std::string cursor;       // pass back to list() for the next page; empty: no more
};

struct Stats {
  uint64_t writes = 0;   // puts, increments and removals applied
  uint64_t commits = 0;  // durable commits they took (group commit: fewer than writes)
};

enum class Op { kGet, kPut, kIncr, kRemove, kList };
// "get", "put", "incr", "delete", "list": the names on the wire, in metrics and in docs.
std::string_view op_name(Op op);
std::optional<Op> parse_op(std::string_view name);
inline bool is_write(Op op) { return op == Op::kPut || op == Op::kIncr || op == Op::kRemove; }

struct Request {
  Op op = Op::kGet;
  std::string ns, key;  // list: key unused
  std::string value;    // put: JSON text
  PutOptions options;   // put
  int64_t delta = 1;    // incr
  std::string prefix, cursor;
  size_t limit = 100;  // list
};

struct Reply {
  Status status;
  std::optional<Item> item;  // get: nullopt when absent or expired
  uint64_t version = 0;      // put, incr: the item's new version
  int64_t number = 0;        // incr: the new value
  bool removed = false;      // remove: there was an item
  Page page;                 // list
};

// Errors: Errc::kInvalid for a bad namespace ("ns") or key ("key"), a value that is not JSON
// ("value"), or an increment of a value that is not an integer ("delta"); kTooLarge for a key
// or value over its limit or a write past the namespace's quota ("quota"); kConflict when
// if_version does not match; kSystem for storage. Error::field is given in parentheses.
class Store {
 public:
  using Done = std::function<void(Reply)>;
  virtual ~Store() = default;

  // Runs `request` and calls `done` once with its reply: on a thread of the store's, or at once
  // on the caller's for a request refused before it reaches storage. Thread-safe.
  virtual void execute(Request request, Done done) = 0;
  // Bytes of keys and values the namespace holds, as its quota counts them.
  virtual Result<uint64_t> used_bytes(std::string_view ns) = 0;
  virtual Stats stats() const = 0;
  virtual const Limits& limits() const = 0;

  // Blocking forms of execute(): each waits for its reply.
  Result<std::optional<Item>> get(std::string_view ns, std::string_view key);
  // Returns the new version.
  Result<uint64_t> put(std::string_view ns, std::string_view key, std::string_view value,
                       const PutOptions& options);
  // Adds `delta` to an integer value (a missing key counts as 0); returns the new value. The
  // item keeps its time to live.
  Result<int64_t> incr(std::string_view ns, std::string_view key, int64_t delta);
  // True when there was an item to remove.
  Result<bool> remove(std::string_view ns, std::string_view key);
  // Items whose key starts with `prefix`, after `cursor`, at most `limit` (and Limits::max_list,
  // and past the first item Limits::max_page_bytes).
  Result<Page> list(std::string_view ns, std::string_view prefix, size_t limit,
                    std::string_view cursor);
  Reply run(Request request);
};

// Errc::kTooLarge naming the input it is about ("key", "value", "quota", "ops").
Error too_large(std::string message, std::string field);
// The documented error type a function sees for `error`: KvInvalidKey, KvKeyTooLarge,
// KvInvalidValue, KvValueTooLarge, KvQuotaExceeded, KvConditionFailed, KvNotAnInteger,
// KvInvalidNamespace, KvAccessDenied, KvTooManyOperations, KvInvalidRequest, KvUnavailable, or
// KvKeyNotFound (the admin API's answer for a missing key: Errc::kNotFound on "key").
// Backends report through Errc and Error::field; this is the one place their names are spelled.
std::string_view error_type(const Error& error);

// What every backend checks before it stores anything.
Status check_namespace(std::string_view ns);
Status check_key(std::string_view key, const Limits& limits);
Status check_value(std::string_view value, const Limits& limits);
// All of the above for `request`.
Status check_request(const Request& request, const Limits& limits);

struct SqliteOptions {
  std::filesystem::path file;  // created when missing
  Limits limits;
  const Clock* clock = &system_clock();
};

// The embedded store: one SQLite database in WAL mode with synchronous=FULL. Writes are
// committed by one thread, together (group commit): a write waits at most for the commit in
// progress and then shares the next one, so 50 writers do not pay 50 fsyncs. Reads run on a
// second thread and connection and never wait for a commit.
Result<std::unique_ptr<Store>> open_sqlite(const SqliteOptions& options);

struct PostgresOptions {
  std::string conninfo;  // libpq connection string
  Limits limits;
  const Clock* clock = &system_clock();
};

// The shared store of several nodes (docs/scale-out.md): tables kv_items and kv_namespaces in
// a PostgreSQL database. Same behaviour as the embedded store; a commit locks the namespaces it
// writes, so counters, versions and quotas stay exact whichever node writes. Expired items are
// deleted by the commits that write their namespace.
Result<std::unique_ptr<Store>> open_postgres(const PostgresOptions& options);

}  // namespace ember::kv
