// Where the registry keeps its records and bundle archives when several nodes share them
// (docs/scale-out.md): a PostgreSQL database. Each node still unpacks the bundles it runs into
// its own state directory, fetched by their sha256 the first time a record names them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ember/common/result.h"

namespace ember::registry {

// A function record as stored: its JSON and a revision, drawn from one sequence for every
// write of every function (so a function deleted and made again never repeats one).
struct StoredRecord {
  std::string name;
  std::string json;
  int64_t revision = 0;
};

class SharedStore {
 public:
  virtual ~SharedStore() = default;

  virtual Result<std::vector<StoredRecord>> load_all() = 0;
  virtual Result<std::optional<StoredRecord>> load(const std::string& name) = 0;
  // Stores `json` as the record of `name` when its stored revision is still `expected` (0: no
  // record), naming the bundles it refers to; returns the new revision. Errc::kConflict (field
  // "revision") when another node wrote it first. Every node is told (watch()).
  virtual Result<int64_t> write(const std::string& name, const std::string& json,
                                const std::vector<std::string>& bundles, int64_t expected) = 0;
  // Removes the record of `name` at revision `expected`; the same conflict as write().
  virtual Status remove(const std::string& name, int64_t expected) = 0;
  // Keeps a bundle archive under its sha256 (once: a second put of the same is a no-op).
  virtual Status put_bundle(const std::string& sha256, std::string_view archive) = 0;
  virtual Result<std::string> get_bundle(const std::string& sha256) = 0;
  // Deletes archives no record names that were put more than an hour ago (a deploy between
  // its put_bundle() and its write() is not robbed).
  virtual Status collect_bundles() = 0;
  // Calls `changed(name)` on a thread of its own after a record was written or removed (by any
  // node, this one too), and `changed("")` when anything may have changed (after the
  // connection was lost and found again). Returns once it listens.
  virtual Status watch(std::function<void(const std::string& name)> changed) = 0;
  // Stops watching: no call of `changed` runs once it returns.
  virtual void unwatch() = 0;
};

// The store on PostgreSQL: tables ember_functions and ember_bundles, notifications on the
// channel ember_functions.
Result<std::unique_ptr<SharedStore>> open_postgres_store(const std::string& conninfo);

}  // namespace ember::registry
