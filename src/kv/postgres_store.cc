#include <fmt/format.h>

#include <algorithm>
#include <mutex>
#include <set>

#include "ember/common/batch_queue.h"
#include "ember/common/text.h"
#include "ember/kv/store.h"
#include "ember/postgres/postgres.h"
#include "write_batch.h"

namespace ember::kv {

namespace {

using postgres::Connection;
using postgres::Param;

// Keys compare byte by byte (COLLATE "C"), as in the embedded store, whatever the database's
// own collation. The schema is created under an advisory lock, so nodes starting together do
// not race on it.
constexpr const char* kSchema = R"sql(
SELECT pg_advisory_xact_lock(7201);
CREATE TABLE IF NOT EXISTS kv_items (
  ns TEXT COLLATE "C" NOT NULL,
  key TEXT COLLATE "C" NOT NULL,
  value TEXT NOT NULL,
  version BIGINT NOT NULL,
  expires_ms BIGINT,
  PRIMARY KEY (ns, key)
);
CREATE INDEX IF NOT EXISTS kv_items_by_expiry ON kv_items (ns, expires_ms)
  WHERE expires_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS kv_namespaces (
  ns TEXT COLLATE "C" PRIMARY KEY,
  bytes BIGINT NOT NULL,
  version BIGINT NOT NULL
);
)sql";

// Expired items of the namespaces a commit writes are deleted a batch at a time in it; until
// then reads skip them.
constexpr int kSweepBatch = 256;

Result<std::optional<Row>> read_row(Connection& c, std::string_view ns, std::string_view key) {
  auto rows = c.exec("SELECT value, version, expires_ms FROM kv_items WHERE ns = $1 AND key = $2",
                     {ns, key});
  if (!rows) return rows.error();
  if (rows->empty()) return std::optional<Row>();
  Row r{rows->text(0, 0), static_cast<uint64_t>(rows->integer(0, 1)), std::nullopt};
  if (!rows->null(0, 2)) r.expires_ms = rows->integer(0, 2);
  return std::optional<Row>(std::move(r));
}

// What PostgreSQL cannot hold in a text column: a NUL byte or bytes that are not UTF-8.
bool storable(std::string_view s) {
  return s.find('\0') == std::string_view::npos && is_valid_utf8(s);
}

// The shared store: several nodes use one database. A commit locks the rows of the namespaces
// it writes (in name order, so two commits never wait on each other in a cycle), which keeps
// versions, counters and quotas exact across nodes. Writes queued while a commit is in
// progress share the next one, as in the embedded store.
class PostgresStore final : public QueuedStore {
 public:
  PostgresStore(std::unique_ptr<Connection> writer, std::unique_ptr<Connection> reader,
                std::unique_ptr<Connection> other, Limits limits, const Clock& clock)
      : QueuedStore(limits),
        w_(std::move(writer)),
        r_(std::move(reader)),
        used_(std::move(other)),
        clock_(clock) {
    start_threads();
  }
  ~PostgresStore() override { stop_threads(); }

  Result<uint64_t> used_bytes(std::string_view ns) override {
    if (auto st = check_namespace(ns); !st) return st.error();
    std::lock_guard lock(used_mu_);
    auto rows = used_->exec("SELECT bytes FROM kv_namespaces WHERE ns = $1", {ns});
    if (!rows) return rows.error();
    return rows->empty() ? uint64_t{0} : static_cast<uint64_t>(rows->integer(0, 0));
  }

 private:
  Reply read(const Request& req) override {
    Reply reply;
    if (req.op == Op::kGet) {
      auto found = read_row(*r_, req.ns, req.key);
      if (!found) {
        reply.status = found.error();
      } else if (*found && (*found)->live(clock_.wall_ms())) {
        Row& r = **found;
        reply.item = Item{req.key, std::move(r.value), r.version, r.expires_ms};
      }
      return reply;
    }
    auto page = list_items(req.ns, req.prefix, req.limit, req.cursor);
    if (page) {
      reply.page = std::move(*page);
    } else {
      reply.status = page.error();
    }
    return reply;
  }

  Result<Page> list_items(std::string_view ns, std::string_view prefix, size_t limit,
                          std::string_view cursor) {
    // Prefix and cursor are UTF-8 (check_request); no key holds a NUL byte.
    if (!storable(prefix) || !storable(cursor)) return Page{};
    limit = std::clamp<size_t>(limit, 1, limits_.max_list);
    // The index range ends where the prefix does, when that bound is itself text.
    std::string past = past_prefix(prefix);
    if (!storable(past)) past.clear();
    auto rows = r_->exec(
        "SELECT key, value, version, expires_ms FROM kv_items WHERE ns = $1 AND key >= $2 "
        "AND key > $3 AND ($4 = '' OR key < $4) AND starts_with(key, $2) "
        "AND (expires_ms IS NULL OR expires_ms > $5) ORDER BY key LIMIT $6",
        {ns, prefix, cursor, past, clock_.wall_ms(), static_cast<int64_t>(limit) + 1});
    if (!rows) return rows.error();
    Page page;
    size_t bytes = 0;
    for (int i = 0; i < rows->size(); ++i) {
      if (page.items.size() == limit || bytes > limits_.max_page_bytes) {
        page.cursor = page.items.back().key;
        break;
      }
      Item item{rows->text(i, 0), rows->text(i, 1), static_cast<uint64_t>(rows->integer(i, 2)),
                std::nullopt};
      if (!rows->null(i, 3)) item.expires_ms = rows->integer(i, 3);
      bytes += item.key.size() + item.value.size();
      page.items.push_back(std::move(item));
    }
    return page;
  }

  // Commits every write of `batch` as one transaction, tried again from the start when the
  // server asks for it. A write that fails its own checks leaves the others; an error of the
  // storage fails them all.
  void commit(std::vector<Pending>& batch) override {
    std::set<std::string> namespaces;
    for (const Pending& p : batch) namespaces.insert(p.request.ns);
    Status committed = w_->transaction([&]() -> Status {
      const int64_t now_ms = clock_.wall_ms();
      Status storage;
      WriteBatch view(
          [&](std::string_view ns, std::string_view key) {
            auto r = read_row(*w_, ns, key);
            if (!r) storage = r.error();
            return r;
          },
          [&](std::string_view ns) {
            auto u = lock_namespace(ns);
            if (!u) storage = u.error();
            return u;
          },
          limits_, now_ms);
      for (const auto& ns : namespaces) {
        auto used = view.usage(ns);
        if (!used) return used.error();
        if (auto st = sweep(ns, now_ms, **used); !st) return st;
      }
      for (Pending& p : batch) {
        p.reply = Reply{};
        p.reply.status = view.apply(p.request, p.reply);
        if (!storage) return storage;
      }
      return write_back(view);
    });
    if (!committed) {
      for (Pending& p : batch) p.reply = Reply{committed};  // nothing of the batch is durable
    }
    counted(batch.size(), committed.ok());
  }

  // The namespace's row, created when missing, locked until the commit.
  Result<Usage> lock_namespace(std::string_view ns) {
    auto made = w_->exec(
        "INSERT INTO kv_namespaces (ns, bytes, version) VALUES ($1, 0, 0) ON CONFLICT DO NOTHING",
        {ns});
    if (!made) return made.error();
    auto rows = w_->exec("SELECT bytes, version FROM kv_namespaces WHERE ns = $1 FOR UPDATE", {ns});
    if (!rows) return rows.error();
    if (rows->empty()) return Error{Errc::kSystem, "kv store: namespace row vanished"};
    return Usage{rows->integer(0, 0), static_cast<uint64_t>(rows->integer(0, 1))};
  }

  // Deletes a batch of the namespace's expired items, whose bytes leave `used`.
  Status sweep(std::string_view ns, int64_t now_ms, Usage& used) {
    auto gone = w_->exec(
        "DELETE FROM kv_items WHERE ctid = ANY(ARRAY(SELECT ctid FROM kv_items WHERE ns = $1 "
        "AND expires_ms IS NOT NULL AND expires_ms <= $2 LIMIT $3)) "
        "RETURNING octet_length(key) + octet_length(value)",
        {ns, now_ms, kSweepBatch});
    if (!gone) return gone.error();
    for (int i = 0; i < gone->size(); ++i) used.bytes -= gone->integer(i, 0);
    return {};
  }

  Status write_back(const WriteBatch& view) {
    Status st;
    view.for_each_changed([&](const WriteBatch::Key& id, const std::optional<Row>& r) {
      if (!st) return;
      if (r) {
        auto done = w_->exec(
            "INSERT INTO kv_items (ns, key, value, version, expires_ms) VALUES ($1, $2, $3, $4, "
            "$5) ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, "
            "version = excluded.version, expires_ms = excluded.expires_ms",
            {id.first, id.second, r->value, r->version, r->expires_ms});
        if (!done) st = done.error();
      } else {
        auto done =
            w_->exec("DELETE FROM kv_items WHERE ns = $1 AND key = $2", {id.first, id.second});
        if (!done) st = done.error();
      }
    });
    if (!st) return st;
    for (const auto& [ns, u] : view.namespaces()) {
      auto done = w_->exec("UPDATE kv_namespaces SET bytes = $2, version = $3 WHERE ns = $1",
                           {ns, u.bytes, u.version});
      if (!done) return done.error();
    }
    return {};
  }

  std::unique_ptr<Connection> w_;  // the committing thread's
  std::unique_ptr<Connection> r_;  // the reading thread's
  std::mutex used_mu_;
  std::unique_ptr<Connection> used_;  // used_bytes() callers', under used_mu_
  const Clock& clock_;
};

}  // namespace

Result<std::unique_ptr<Store>> open_postgres(const PostgresOptions& options) {
  constexpr const char* kName = "kv store";
  auto writer = Connection::open(options.conninfo, kName);
  if (!writer) return writer.error();
  if (auto st = (*writer)->create_schema(kSchema); !st) {
    return st.error();
  }
  auto reader = Connection::open(options.conninfo, kName);
  if (!reader) return reader.error();
  auto other = Connection::open(options.conninfo, kName);
  if (!other) return other.error();
  return std::unique_ptr<Store>(new PostgresStore(
      std::move(*writer), std::move(*reader), std::move(*other), options.limits, *options.clock));
}

}  // namespace ember::kv
