#include <fmt/format.h>

#include <mutex>

#include "ember/postgres/postgres.h"
#include "ember/registry/shared_store.h"

namespace ember::registry {

namespace {

using postgres::Connection;
using postgres::Param;

constexpr const char* kSchema = R"sql(
SELECT pg_advisory_xact_lock(7203);
CREATE SEQUENCE IF NOT EXISTS ember_revisions;
CREATE TABLE IF NOT EXISTS ember_functions (
  name TEXT PRIMARY KEY,
  record TEXT NOT NULL,
  revision BIGINT NOT NULL,
  bundles TEXT[] NOT NULL
);
CREATE TABLE IF NOT EXISTS ember_bundles (
  sha256 TEXT PRIMARY KEY,
  archive BYTEA NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
)sql";

constexpr const char* kChannel = "ember_functions";

// An array of text as PostgreSQL reads it: {"a","b"}. Bundle names are hex digests.
std::string text_array(const std::vector<std::string>& items) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ',';
    out += '"' + items[i] + '"';
  }
  return out + "}";
}

class PostgresStore final : public SharedStore {
 public:
  PostgresStore(std::unique_ptr<Connection> c, std::string conninfo)
      : c_(std::move(c)), conninfo_(std::move(conninfo)) {}

  Result<std::vector<StoredRecord>> load_all() override {
    std::lock_guard lock(mu_);
    auto rows = c_->exec("SELECT name, record, revision FROM ember_functions ORDER BY name");
    if (!rows) return rows.error();
    std::vector<StoredRecord> out;
    for (int i = 0; i < rows->size(); ++i) {
      out.push_back({rows->text(i, 0), rows->text(i, 1), rows->integer(i, 2)});
    }
    return out;
  }

  Result<std::optional<StoredRecord>> load(const std::string& name) override {
    std::lock_guard lock(mu_);
    auto rows =
        c_->exec("SELECT name, record, revision FROM ember_functions WHERE name = $1", {name});
    if (!rows) return rows.error();
    if (rows->empty()) return std::optional<StoredRecord>();
    return std::optional<StoredRecord>(
        StoredRecord{rows->text(0, 0), rows->text(0, 1), rows->integer(0, 2)});
  }

  Result<int64_t> write(const std::string& name, const std::string& json,
                        const std::vector<std::string>& bundles, int64_t expected) override {
    std::lock_guard lock(mu_);
    int64_t revision = 0;
    Status st = c_->transaction([&]() -> Status {
      auto rows = expected == 0
                      ? c_->exec(
                            "INSERT INTO ember_functions (name, record, revision, bundles) VALUES "
                            "($1, $2, nextval('ember_revisions'), $3::text[]) ON CONFLICT (name) "
                            "DO NOTHING "
                            "RETURNING revision",
                            {name, json, text_array(bundles)})
                      : c_->exec(
                            "UPDATE ember_functions SET record = $2, revision = "
                            "nextval('ember_revisions'), "
                            "bundles = $3::text[] WHERE name = $1 AND revision = $4 "
                            "RETURNING revision",
                            {name, json, text_array(bundles), expected});
      if (!rows) return rows.error();
      if (rows->empty()) return changed_elsewhere(name);
      revision = rows->integer(0, 0);
      return notify(name);
    });
    if (!st) return st.error();
    return revision;
  }

  Status remove(const std::string& name, int64_t expected) override {
    std::lock_guard lock(mu_);
    return c_->transaction([&]() -> Status {
      auto rows =
          c_->exec("DELETE FROM ember_functions WHERE name = $1 AND revision = $2 RETURNING name",
                   {name, expected});
      if (!rows) return rows.error();
      if (rows->empty()) return changed_elsewhere(name);
      return notify(name);
    });
  }

  Status put_bundle(const std::string& sha256, std::string_view archive) override {
    std::lock_guard lock(mu_);
    // A bundle put again is touched, so that collection spares it for another hour.
    auto r = c_->exec(
        "INSERT INTO ember_bundles (sha256, archive) VALUES ($1, $2) ON CONFLICT (sha256) DO "
        "UPDATE SET created_at = now()",
        {sha256, Param::bytes(archive)});
    if (!r) return r.error();
    return {};
  }

  Result<std::string> get_bundle(const std::string& sha256) override {
    std::lock_guard lock(mu_);
    auto rows = c_->exec("SELECT archive FROM ember_bundles WHERE sha256 = $1", {sha256});
    if (!rows) return rows.error();
    if (rows->empty()) return Error::not_found("bundle " + sha256 + " is not in the shared store");
    return rows->bytes(0, 0);
  }

  Status collect_bundles() override {
    std::lock_guard lock(mu_);
    auto r = c_->exec(
        "DELETE FROM ember_bundles b WHERE b.created_at < now() - interval '1 hour' AND NOT "
        "EXISTS (SELECT 1 FROM ember_functions f WHERE b.sha256 = ANY(f.bundles))");
    if (!r) return r.error();
    return {};
  }

  void unwatch() override { listener_.reset(); }

  Status watch(std::function<void(const std::string& name)> changed) override {
    listener_ = std::make_unique<postgres::Listener>(
        conninfo_, std::vector<std::string>{kChannel},
        [changed](const std::string&, const std::string& payload) { changed(payload); },
        [changed] { changed(""); });
    return listener_->start();
  }

 private:
  Status changed_elsewhere(const std::string& name) {
    Error e = Error::conflict(
        fmt::format("function {} was changed by another node at the same time", name));
    e.field = "revision";
    return e;
  }
  Status notify(const std::string& name) { return c_->notify(kChannel, name); }

  std::mutex mu_;
  std::unique_ptr<Connection> c_;
  std::string conninfo_;
  std::unique_ptr<postgres::Listener> listener_;  // last: its thread stops first
};

}  // namespace

Result<std::unique_ptr<SharedStore>> open_postgres_store(const std::string& conninfo) {
  auto c = Connection::open(conninfo, "function registry");
  if (!c) return c.error();
  if (auto st = (*c)->create_schema(kSchema); !st) return st.error();
  return std::unique_ptr<SharedStore>(new PostgresStore(std::move(*c), conninfo));
}

}  // namespace ember::registry
