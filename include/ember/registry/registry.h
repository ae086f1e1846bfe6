// The function registry: every deployed function, its immutable versions and which one is
// active, kept durably in the state directory.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "ember/common/clock.h"
#include "ember/common/result.h"
#include "ember/registry/bundle.h"
#include "ember/registry/manifest.h"
#include "ember/registry/shared_store.h"

namespace ember::registry {

// One immutable version: a bundle (by the sha256 of the archive) plus a configuration. Every
// change to code or configuration creates a new version; rollback makes an older one active.
struct Version {
  int number = 0;
  std::string bundle_sha256;
  uint64_t bundle_bytes = 0;
  FunctionConfig config;
  int64_t created_ms = 0;
};

// A name for one version of a function, optionally sending a share of its calls to a second
// version (a canary). Versions an alias names are kept however many newer ones come.
struct Alias {
  std::string name;
  int version = 0;
  int canary_version = 0;    // 0: no canary
  double canary_weight = 0;  // the share of calls the canary version gets, in (0, 1)
  std::string description;
  int64_t updated_ms = 0;

  nlohmann::json to_json() const;
  bool operator==(const Alias&) const = default;
};

// Checks an alias name as Lambda does: 1 to 128 of [A-Za-z0-9_-], not all digits (those name
// versions).
Status validate_alias_name(std::string_view name);

// Which version a call runs: `qualifier` as the caller gave it (empty for none).
struct Target {
  int version = 0;
  std::string qualifier;
};

struct FunctionRecord {
  std::string name;
  int active_version = 0;
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  std::vector<Version> versions;  // ascending by number
  std::map<std::string, Alias, std::less<>> aliases;

  const Version& active() const;
  const Version* find(int number) const;
  // The version a qualifier names: none or "$LATEST", the active version; digits, that version;
  // else an alias, whose canary version runs when `draw` (uniform in [0, 1)) falls under its
  // weight. Errc::kNotFound when the version or alias does not exist.
  Result<Target> resolve(std::string_view qualifier, double draw) const;
  nlohmann::json to_json() const;
  static Result<FunctionRecord> from_json(const nlohmann::json& j);
};

using RecordPtr = std::shared_ptr<const FunctionRecord>;

struct RegistryOptions {
  std::filesystem::path state_dir;
  BundleLimits limits;
  int max_versions = 10;  // versions kept per function; the active one is always kept
  const Clock* clock = &system_clock();
  // Several nodes: records and archives live in this store, and the state directory holds
  // only this node's unpacked copies of the bundles. nullptr: the state directory holds all.
  std::shared_ptr<SharedStore> shared;
};

struct DeployRequest {
  std::string name;
  std::string bundle;        // archive bytes
  std::string content_type;  // as sent; the format is sniffed when it is generic
  nlohmann::json overrides = nlohmann::json::object();  // typed like the manifest
};

struct Change {
  RecordPtr record;
  bool created = false;  // the function did not exist before
  bool changed = false;  // a new version was made active
};

// Owns the state directory's `functions/`, `bundles/` and `tmp/`. Thread-safe: mutations are
// serialized among themselves and block on disk I/O, so callers run them off the event loop;
// get() and list() take a short lock and never touch the disk. With a shared store, a record
// is published here only once every bundle it names is unpacked on this node, and a mutation
// that races one on another node is applied again on top of the other's.
class Registry {
 public:
  // Opens the registry, recovering from any crash: temporary files and staging directories are
  // removed, bundles no version refers to are deleted, every record is loaded.
  static Result<std::unique_ptr<Registry>> open(RegistryOptions options);
  ~Registry();

  // Unpacks the bundle, validates manifest and overrides, and activates a new version. When
  // bundle and configuration equal the active version nothing changes (idempotent deploys).
  Result<Change> deploy(const DeployRequest& request);
  // Packs `dir` deterministically and deploys it as `name`.
  Result<Change> deploy_directory(const std::string& name, const std::filesystem::path& dir);
  // Applies a configuration patch as a new version with the same bundle.
  Result<Change> patch(const std::string& name, const nlohmann::json& patch);
  Result<Change> rollback(const std::string& name, int version);
  Status remove(const std::string& name);
  // Creates or replaces an alias (`create_only`: Errc::kConflict when it exists);
  // Change::created tells whether it is new. Its versions must exist.
  Result<Change> put_alias(const std::string& function, Alias alias, bool create_only = false);
  Result<Change> remove_alias(const std::string& function, std::string_view alias);

  // Shared store: follows what other nodes change. `changed` runs on the store's thread after
  // a function changed: its record now, or nullptr when it was removed. follow(nullptr) stops
  // the calls: none runs once it returns.
  using Observer = std::function<void(const std::string& name, RecordPtr now)>;
  Status follow(Observer changed);
  // Reads the record of `name` (all of them, for "") from the shared store again.
  void refresh(const std::string& name);
  // Shared store: a function this node does not know may have been made on another node a
  // moment ago, its notification still on the way. Reads `name` again and returns its record
  // (nullptr: it does not exist). Names nobody made must not become a flood of reads: a name
  // is read again at most once per kCatchUpEvery, and all names at most kCatchUpsPerSecond
  // times a second; past either, the answer is the table's. Blocks: off the event loop.
  RecordPtr catch_up(const std::string& name);
  static constexpr std::chrono::milliseconds kCatchUpEvery{1000};
  static constexpr int kCatchUpsPerSecond = 50;
  bool shared() const { return options_.shared != nullptr; }

  RecordPtr get(const std::string& name) const;
  std::vector<RecordPtr> list() const;
  size_t size() const;

  // Directory holding the unpacked bundle of `version`.
  std::filesystem::path bundle_dir(const Version& version) const;
  const std::filesystem::path& state_dir() const { return options_.state_dir; }

 private:
  explicit Registry(RegistryOptions options);
  Status recover();
  Result<Change> commit(const std::string& name, RecordPtr previous, FunctionRecord next);
  Status write_record(const FunctionRecord& record);
  int64_t revision_of(const std::string& name) const;
  void collect_garbage();
  Status load_shared();
  // Unpacks the bundle of `version` from the shared store unless this node has it.
  Status materialize(const Version& version);
  // Runs a mutation again, on top of the other node's, when one raced it.
  template <class Mutation>
  auto retrying(const std::string& name, Mutation once) -> decltype(once());
  // A record from the shared store, checked and with its bundles here; nullptr when damaged.
  RecordPtr adopt(const StoredRecord& stored);

  RegistryOptions options_;
  std::filesystem::path functions_dir_;
  std::filesystem::path bundles_dir_;
  std::filesystem::path tmp_dir_;

  bool keep_bundles_ = false;    // a damaged record was skipped: its bundles are never collected
  std::mutex write_mu_;          // serializes mutations; held across their disk I/O
  mutable std::mutex table_mu_;  // guards table_; held only to copy or swap pointers
  std::map<std::string, RecordPtr, std::less<>> table_;
  std::map<std::string, int64_t, std::less<>> revisions_;  // shared store; under table_mu_
  std::mutex observer_mu_;
  Observer observer_;
  bool following_ = false;
  std::mutex catch_up_mu_;                                           // guards the three below
  std::map<std::string, Clock::time_point, std::less<>> caught_up_;  // name → its last read
  Clock::time_point catch_up_window_{};
  int catch_ups_in_window_ = 0;
};

}  // namespace ember::registry
