// Invoke keys in PostgreSQL, for several nodes: tables ember_keys and ember_secrets, and a
// notification on the channel ember_keys after every change, on which each node reads the
// (short) list again.
#include <mutex>

#include "ember/common/crypto.h"
#include "ember/gateway/keys.h"
#include "ember/postgres/postgres.h"

namespace ember::gateway {

namespace {

using postgres::Connection;

constexpr const char* kSchema = R"sql(
SELECT pg_advisory_xact_lock(7204);
CREATE TABLE IF NOT EXISTS ember_keys (
  id TEXT PRIMARY KEY,
  function TEXT NOT NULL,
  created_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS ember_keys_by_function ON ember_keys (function);
CREATE TABLE IF NOT EXISTS ember_secrets (
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
)sql";

constexpr const char* kChannel = "ember_keys";

class PostgresKeyStore final : public KeyStore {
 public:
  PostgresKeyStore(std::unique_ptr<Connection> c, std::string conninfo)
      : c_(std::move(c)), conninfo_(std::move(conninfo)) {}

  Result<std::string> master() override {
    auto fresh = random_hex(32);
    if (!fresh) return fresh.error();
    std::lock_guard lock(mu_);
    // The first node to start creates it; every other reads that one.
    auto made = c_->exec(
        "INSERT INTO ember_secrets (name, value) VALUES ('keys.master', $1) ON CONFLICT DO NOTHING",
        {*fresh});
    if (!made) return made.error();
    auto rows = c_->exec("SELECT value FROM ember_secrets WHERE name = 'keys.master'");
    if (!rows) return rows.error();
    if (rows->empty()) return Error{Errc::kSystem, "invoke keys: the master secret vanished"};
    return rows->text(0, 0);
  }

  Result<std::vector<InvokeKey>> load() override {
    std::lock_guard lock(mu_);
    auto rows = c_->exec("SELECT id, function, created_ms FROM ember_keys ORDER BY created_ms, id");
    if (!rows) return rows.error();
    std::vector<InvokeKey> keys;
    for (int i = 0; i < rows->size(); ++i) {
      keys.push_back(InvokeKey{rows->text(i, 0), rows->text(i, 1), rows->integer(i, 2)});
    }
    return keys;
  }

  Status add(const InvokeKey& key) override {
    std::lock_guard lock(mu_);
    return c_->transaction([&]() -> Status {
      auto r = c_->exec("INSERT INTO ember_keys (id, function, created_ms) VALUES ($1, $2, $3)",
                        {key.id, key.function, key.created_ms});
      if (!r) return r.error();
      return notify();
    });
  }

  Result<bool> remove(const std::string& function, std::string_view id) override {
    std::lock_guard lock(mu_);
    bool removed = false;
    Status st = c_->transaction([&]() -> Status {
      auto r = c_->exec("DELETE FROM ember_keys WHERE id = $1 AND function = $2", {id, function});
      if (!r) return r.error();
      removed = r->affected() > 0;
      return removed ? notify() : Status{};
    });
    if (!st) return st.error();
    return removed;
  }

  Status remove_function(const std::string& function) override {
    std::lock_guard lock(mu_);
    return c_->transaction([&]() -> Status {
      auto r = c_->exec("DELETE FROM ember_keys WHERE function = $1", {function});
      if (!r) return r.error();
      return notify();
    });
  }

  Status watch(std::function<void()> changed) override {
    listener_ = std::make_unique<postgres::Listener>(
        conninfo_, std::vector<std::string>{kChannel},
        [changed](const std::string&, const std::string&) { changed(); }, changed);
    return listener_->start();
  }

 private:
  Status notify() { return c_->notify(kChannel, ""); }

  std::mutex mu_;
  std::unique_ptr<Connection> c_;
  std::string conninfo_;
  std::unique_ptr<postgres::Listener> listener_;  // last: its thread stops first
};

}  // namespace

Result<std::unique_ptr<KeyStore>> postgres_key_store(const std::string& conninfo) {
  auto c = Connection::open(conninfo, "invoke keys");
  if (!c) return c.error();
  if (auto st = (*c)->create_schema(kSchema); !st) return st.error();
  return std::unique_ptr<KeyStore>(new PostgresKeyStore(std::move(*c), conninfo));
}

}  // namespace ember::gateway
