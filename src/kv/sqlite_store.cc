#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <unordered_map>

#include "ember/common/batch_queue.h"
#include "ember/common/json_fields.h"
#include "ember/kv/store.h"
#include "ember/sqlite/sqlite.h"
#include "write_batch.h"

namespace ember::kv {

namespace {

using sqlite::Connection;
using sqlite::Statement;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS items (
  ns TEXT NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  version INTEGER NOT NULL,
  expires_ms INTEGER,
  PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_by_expiry ON items (expires_ms) WHERE expires_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS namespaces (
  ns TEXT PRIMARY KEY,
  bytes INTEGER NOT NULL,
  version INTEGER NOT NULL  -- the last version given to a write in the namespace
) WITHOUT ROWID;
)sql";

// Expired items are deleted a batch at a time after writes; until then reads skip them.
constexpr int kSweepBatch = 256;

// The row of `key` as stored, expired or not.
Result<std::optional<Row>> read_row(Connection& c, std::string_view ns, std::string_view key) {
  Statement q(c, "SELECT value, version, expires_ms FROM items WHERE ns = ? AND key = ?");
  if (!q) return c.error("read");
  q.text(1, ns);
  q.text(2, key);
  int rc = q.step();
  if (rc == SQLITE_DONE) return std::optional<Row>();
  if (rc != SQLITE_ROW) return c.error("read");
  Row r{q.column_text(0), static_cast<uint64_t>(q.column_int(1)), std::nullopt};
  if (!q.column_null(2)) r.expires_ms = q.column_int(2);
  return std::optional<Row>(std::move(r));
}

class SqliteStore final : public QueuedStore {
 public:
  SqliteStore(std::unique_ptr<Connection> writer, std::unique_ptr<Connection> reader,
              std::unique_ptr<Connection> other, Limits limits, const Clock& clock)
      : QueuedStore(limits),
        w_(std::move(writer)),
        r_(std::move(reader)),
        used_(std::move(other)),
        clock_(clock) {
    start_threads();
  }
  ~SqliteStore() override { stop_threads(); }

  Result<uint64_t> used_bytes(std::string_view ns) override {
    if (auto st = check_namespace(ns); !st) return st.error();
    std::lock_guard lock(used_mu_);
    Statement q(*used_, "SELECT bytes FROM namespaces WHERE ns = ?");
    if (!q) return used_->error("read");
    q.text(1, ns);
    int rc = q.step();
    if (rc == SQLITE_DONE) return uint64_t{0};
    if (rc != SQLITE_ROW) return used_->error("read");
    return static_cast<uint64_t>(q.column_int(0));
  }

 private:
  Reply read(const Request& req) override {
    Reply reply;
    if (req.op == Op::kGet) {
      auto item = get_item(req.ns, req.key);
      if (item) {
        reply.item = std::move(*item);
      } else {
        reply.status = item.error();
      }
    } else {
      auto page = list_items(req.ns, req.prefix, req.limit, req.cursor);
      if (page) {
        reply.page = std::move(*page);
      } else {
        reply.status = page.error();
      }
    }
    return reply;
  }

  Result<std::optional<Item>> get_item(std::string_view ns, std::string_view key) {
    auto found = read_row(*r_, ns, key);
    if (!found) return found.error();
    if (!*found || !(*found)->live(clock_.wall_ms())) return std::optional<Item>();
    Row& r = **found;
    return std::optional<Item>(Item{std::string(key), std::move(r.value), r.version, r.expires_ms});
  }

  Result<Page> list_items(std::string_view ns, std::string_view prefix, size_t limit,
                          std::string_view cursor) {
    limit = std::clamp<size_t>(limit, 1, limits_.max_list);
    // Keys from max(prefix, after cursor) while they still start with the prefix; one more
    // than the page is read to tell whether another page follows.
    Statement q(*r_,
                "SELECT key, value, version, expires_ms FROM items WHERE ns = ? AND key >= ? "
                "AND key > ? AND (? = '' OR key < ?) "
                "AND substr(CAST(key AS BLOB), 1, ?) = CAST(? AS BLOB) "
                "AND (expires_ms IS NULL OR expires_ms > ?) "
                "ORDER BY key LIMIT ?");
    if (!q) return r_->error("list");
    // The index range ends where the prefix does.
    const std::string past = past_prefix(prefix);
    q.text(1, ns);
    q.text(2, prefix);
    q.text(3, cursor);
    q.text(4, past);
    q.text(5, past);
    q.integer(6, static_cast<int64_t>(prefix.size()));
    q.text(7, prefix);
    q.integer(8, clock_.wall_ms());
    q.integer(9, static_cast<int64_t>(limit) + 1);
    Page page;
    size_t bytes = 0;
    int rc;
    while ((rc = q.step()) == SQLITE_ROW) {
      if (page.items.size() == limit || bytes > limits_.max_page_bytes) {
        page.cursor = page.items.back().key;
        break;
      }
      Item item{q.column_text(0), q.column_text(1), static_cast<uint64_t>(q.column_int(2)),
                std::nullopt};
      if (!q.column_null(3)) {
        item.expires_ms = q.column_int(3);
      }
      bytes += item.key.size() + item.value.size();
      page.items.push_back(std::move(item));
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return r_->error("list");
    return page;
  }

  // Commits every write of `batch` as one transaction. Each write is checked before it changes
  // anything, so one that fails leaves the others; an error of the storage itself fails them all.
  void commit(std::vector<Pending>& batch) override {
    const int64_t now_ms = clock_.wall_ms();
    WriteBatch view(
        [this](std::string_view ns, std::string_view key) { return read_row(*w_, ns, key); },
        [this](std::string_view ns) { return read_usage(ns); }, limits_, now_ms);
    Status committed = w_->exec("BEGIN IMMEDIATE");
    for (Pending& p : batch) {
      if (!committed) break;
      p.reply.status = view.apply(p.request, p.reply);
      if (!p.reply.status && p.reply.status.error().code == Errc::kSystem) {
        committed = p.reply.status;
      }
    }
    if (committed) committed = write_back(view);
    if (committed) committed = sweep(now_ms);
    if (committed) committed = w_->exec("COMMIT");
    if (!committed) {
      (void)w_->exec("ROLLBACK");  // fails only when there is no transaction left to undo
      for (Pending& p : batch) p.reply = Reply{committed};  // nothing of the batch is durable
    }
    counted(batch.size(), committed.ok());
  }

  Result<Usage> read_usage(std::string_view ns) {
    Statement q(*w_, "SELECT bytes, version FROM namespaces WHERE ns = ?");
    if (!q) return w_->error("read");
    q.text(1, ns);
    int rc = q.step();
    if (rc == SQLITE_ROW) return Usage{q.column_int(0), static_cast<uint64_t>(q.column_int(1))};
    if (rc != SQLITE_DONE) return w_->error("read");
    return Usage{};
  }

  // Writes the rows and namespaces the batch changed.
  Status write_back(const WriteBatch& view) {
    Status st;
    view.for_each_changed([&](const WriteBatch::Key& id, const std::optional<Row>& r) {
      if (!st) return;
      if (r) {
        Statement q(
            *w_,
            "INSERT INTO items (ns, key, value, version, expires_ms) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, "
            "version = excluded.version, expires_ms = excluded.expires_ms");
        if (!q) {
          st = w_->error("write");
          return;
        }
        q.text(1, id.first);
        q.text(2, id.second);
        q.text(3, r->value);
        q.integer(4, static_cast<int64_t>(r->version));
        if (r->expires_ms) {
          q.integer(5, *r->expires_ms);
        } else {
          q.null(5);
        }
        if (q.step() != SQLITE_DONE) st = w_->error("write");
      } else {
        Statement q(*w_, "DELETE FROM items WHERE ns = ? AND key = ?");
        if (!q) {
          st = w_->error("delete");
          return;
        }
        q.text(1, id.first);
        q.text(2, id.second);
        if (q.step() != SQLITE_DONE) st = w_->error("delete");
      }
    });
    if (!st) return st;
    for (const auto& [ns, u] : view.namespaces()) {
      Statement q(*w_,
                  "INSERT INTO namespaces (ns, bytes, version) VALUES (?, ?, ?) "
                  "ON CONFLICT (ns) DO UPDATE SET bytes = excluded.bytes, "
                  "version = excluded.version");
      if (!q) return w_->error("write");
      q.text(1, ns);
      q.integer(2, u.bytes);
      q.integer(3, static_cast<int64_t>(u.version));
      if (q.step() != SQLITE_DONE) return w_->error("write");
    }
    return {};
  }

  // Adds `delta` bytes to the namespace as stored, inside the current transaction.
  Status add_bytes(std::string_view ns, int64_t delta) {
    Statement q(*w_, "UPDATE namespaces SET bytes = bytes + ? WHERE ns = ?");
    if (!q) return w_->error("write");
    q.integer(1, delta);
    q.text(2, ns);
    if (q.step() != SQLITE_DONE) return w_->error("write");
    return {};
  }

  // Deletes a batch of expired items inside the current transaction, in a savepoint of its
  // own: a sweep that fails is undone and left for the next commit. An error here means the
  // savepoint itself could not be undone, and the transaction must not commit.
  Status sweep(int64_t now_ms) {
    struct Expired {
      std::string ns, key;
      int64_t bytes;
    };
    std::vector<Expired> expired;
    {
      Statement q(*w_,
                  "SELECT ns, key, length(CAST(value AS BLOB)) FROM items "
                  "WHERE expires_ms IS NOT NULL AND expires_ms <= ? LIMIT ?");
      if (!q) return {};
      q.integer(1, now_ms);
      q.integer(2, kSweepBatch);
      while (q.step() == SQLITE_ROW) {
        std::string ns = q.column_text(0), key = q.column_text(1);
        const int64_t bytes = static_cast<int64_t>(key.size()) + q.column_int(2);
        expired.push_back({std::move(ns), std::move(key), bytes});
      }
    }
    if (expired.empty()) return {};
    if (auto st = w_->exec("SAVEPOINT sweep"); !st) return st;
    bool ok = true;
    for (const auto& e : expired) {
      Statement q(*w_, "DELETE FROM items WHERE ns = ? AND key = ?");
      ok = static_cast<bool>(q);
      if (!ok) break;
      q.text(1, e.ns);
      q.text(2, e.key);
      ok = q.step() == SQLITE_DONE;
      if (ok) ok = add_bytes(e.ns, -e.bytes).ok();
      if (!ok) break;
    }
    if (!ok) {
      if (auto st = w_->exec("ROLLBACK TO sweep"); !st) return st;
    }
    return w_->exec("RELEASE sweep");
  }

  std::unique_ptr<Connection> w_;  // the committing thread's
  std::unique_ptr<Connection> r_;  // the reading thread's (WAL: reads never wait for a commit)
  std::mutex used_mu_;
  std::unique_ptr<Connection> used_;  // used_bytes() callers', under used_mu_
  const Clock& clock_;
};

}  // namespace

Result<std::unique_ptr<Store>> open_sqlite(const SqliteOptions& options) {
  // Each connection is in WAL mode, so a commit is one append to the log and readers never wait
  // for it, with synchronous=FULL: each commit is fsynced before the writes in it are
  // acknowledged, so they survive kill -9 and power loss.
  constexpr const char* kName = "kv store";
  auto writer = Connection::open(options.file, kName);
  if (!writer) return writer.error();
  if (auto st = (*writer)->exec(kSchema); !st) return st.error();
  auto reader = Connection::open(options.file, kName);
  if (!reader) return reader.error();
  auto other = Connection::open(options.file, kName);
  if (!other) return other.error();
  return std::unique_ptr<Store>(new SqliteStore(std::move(*writer), std::move(*reader),
                                                std::move(*other), options.limits, *options.clock));
}

}  // namespace ember::kv
