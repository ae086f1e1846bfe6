#include "ember/registry/registry.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <set>

#include "ember/common/crypto.h"
#include "ember/common/json_fields.h"
#include "ember/os/fs.h"

namespace ember::registry {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxManifestBytes = 64 * 1024;
constexpr size_t kMaxRecordBytes = 4 << 20;
constexpr std::string_view kRecordSuffix = ".json";
constexpr size_t kMaxAliasDescription = 256;

Result<FunctionConfig> load_manifest(const fs::path& bundle_root, const json& overrides) {
  json manifest = json::object();
  fs::path path = bundle_root / "function.json";
  std::error_code ec;
  if (fs::exists(fs::symlink_status(path, ec))) {
    auto text = os::read_file(path, kMaxManifestBytes);
    if (!text) {
      return Error::invalid("function.json: " + text.error().message);
    }
    auto parsed = parse_json(*text, "function.json");
    if (!parsed) return std::move(parsed).error();
    manifest = std::move(*parsed);
    if (!manifest.is_object()) return Error::invalid("function.json must hold a JSON object");
  }
  auto config = parse_config(manifest, overrides);
  if (!config) return std::move(config).error();
  if (auto st = check_handler(*config, bundle_root); !st) return std::move(st).error();
  return config;
}

}  // namespace

// ---- FunctionRecord ----

json Alias::to_json() const {
  json j{{"name", name}, {"version", version}, {"updated_ms", updated_ms}};
  if (!description.empty()) j["description"] = description;
  if (canary_version > 0)
    j["canary"] = json{{"version", canary_version}, {"weight", canary_weight}};
  return j;
}

namespace {

Result<Alias> alias_from_json(const json& j, const std::string& prefix) {
  Alias a;
  JsonFields f(j, prefix);
  f.string("name", a.name, 128);
  f.integer("version", a.version, 1, INT32_MAX);
  f.string("description", a.description, kMaxAliasDescription);
  f.integer("updated_ms", a.updated_ms, 0, INT64_MAX);
  if (const json* canary = f.object("canary")) {
    JsonFields cf(*canary, f.path("canary"));
    cf.integer("version", a.canary_version, 1, INT32_MAX);
    cf.number("weight", a.canary_weight, 0, 1);
    if (auto st = cf.finish(); !st) return std::move(st).error();
  }
  if (auto st = f.finish(); !st) return std::move(st).error();
  return a;
}

}  // namespace

Status validate_alias_name(std::string_view name) {
  if (name.empty() || name.size() > 128 ||
      name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
          std::string_view::npos) {
    return Error::invalid(
        fmt::format("alias name \"{}\" must be 1 to 128 letters, digits, '-' or '_'", name),
        "name");
  }
  if (name.find_first_not_of("0123456789") == std::string_view::npos) {
    return Error::invalid(
        fmt::format("alias name \"{}\" is all digits, which names a version", name), "name");
  }
  return {};
}

const Version& FunctionRecord::active() const { return *find(active_version); }

Result<Target> FunctionRecord::resolve(std::string_view qualifier, double draw) const {
  if (qualifier.empty() || qualifier == "$LATEST") return Target{active_version, {}};
  if (qualifier.find_first_not_of("0123456789") == std::string_view::npos) {
    int number = 0;
    auto [end, ec] = std::from_chars(qualifier.data(), qualifier.data() + qualifier.size(), number);
    if (ec != std::errc() || !find(number)) {
      return Error::not_found(fmt::format("function {} has no version {}", name, qualifier));
    }
    return Target{number, std::string(qualifier)};
  }
  auto it = aliases.find(qualifier);
  if (it == aliases.end()) {
    return Error::not_found(fmt::format("function {} has no alias {}", name, qualifier));
  }
  const Alias& a = it->second;
  const bool canary = a.canary_version > 0 && draw < a.canary_weight;
  return Target{canary ? a.canary_version : a.version, std::string(qualifier)};
}

const Version* FunctionRecord::find(int number) const {
  for (const auto& v : versions) {
    if (v.number == number) return &v;
  }
  return nullptr;
}

json FunctionRecord::to_json() const {
  json versions_json = json::array();
  for (const auto& v : versions) {
    versions_json.push_back(json{{"version", v.number},
                                 {"bundle_sha256", v.bundle_sha256},
                                 {"bundle_bytes", v.bundle_bytes},
                                 {"created_ms", v.created_ms},
                                 {"config", v.config.to_json()}});
  }
  json j{{"name", name},
         {"active_version", active_version},
         {"created_ms", created_ms},
         {"updated_ms", updated_ms},
         {"versions", std::move(versions_json)}};
  if (!aliases.empty()) {
    json list = json::array();
    for (const auto& [_, a] : aliases) list.push_back(a.to_json());
    j["aliases"] = std::move(list);
  }
  return j;
}

Result<FunctionRecord> FunctionRecord::from_json(const json& j) {
  FunctionRecord r;
  JsonFields f(j, "");
  f.string("name", r.name, 63);
  f.integer("active_version", r.active_version, 1, INT32_MAX);
  f.integer("created_ms", r.created_ms, 0, INT64_MAX);
  f.integer("updated_ms", r.updated_ms, 0, INT64_MAX);
  const json* versions = f.array("versions");
  const json* aliases = f.array("aliases");
  if (auto st = f.finish(); !st) return std::move(st).error();
  for (size_t i = 0; aliases && i < aliases->size(); ++i) {
    auto alias = alias_from_json((*aliases)[i], fmt::format("aliases[{}]", i));
    if (!alias) return std::move(alias).error();
    std::string alias_name = alias->name;
    r.aliases.emplace(std::move(alias_name), std::move(*alias));
  }
  if (!versions) return Error::invalid("versions: missing", "versions");
  for (size_t i = 0; i < versions->size(); ++i) {
    const json& vj = (*versions)[i];
    Version v;
    JsonFields vf(vj, fmt::format("versions[{}]", i));
    vf.integer("version", v.number, 1, INT32_MAX);
    vf.string("bundle_sha256", v.bundle_sha256, 64);
    int64_t bytes = 0;
    vf.integer("bundle_bytes", bytes, 0, INT64_MAX);
    v.bundle_bytes = static_cast<uint64_t>(bytes);
    vf.integer("created_ms", v.created_ms, 0, INT64_MAX);
    const json* config = vf.object("config");
    if (auto st = vf.finish(); !st) return std::move(st).error();
    if (!config) return Error::invalid(fmt::format("versions[{}].config: missing", i));
    auto parsed = parse_config(*config);
    if (!parsed) return std::move(parsed).error();
    v.config = std::move(*parsed);
    r.versions.push_back(std::move(v));
  }
  if (validate_name(r.name).ok() == false) return Error::invalid("name: invalid");
  if (!r.find(r.active_version)) return Error::invalid("active_version: no such version");
  for (const auto& [alias_name, a] : r.aliases) {
    if (!r.find(a.version) || (a.canary_version > 0 && !r.find(a.canary_version))) {
      return Error::invalid(fmt::format("aliases: {} names a version that is gone", alias_name));
    }
  }
  return r;
}

// ---- Registry ----

Registry::Registry(RegistryOptions options)
    : options_(std::move(options)),
      functions_dir_(options_.state_dir / "functions"),
      bundles_dir_(options_.state_dir / "bundles"),
      tmp_dir_(options_.state_dir / "tmp") {}

Registry::~Registry() {
  // The watching thread calls refresh(), which uses every member: it stops first.
  if (options_.shared) options_.shared->unwatch();
}

Result<std::unique_ptr<Registry>> Registry::open(RegistryOptions options) {
  if (auto st = os::ensure_dir(options.state_dir, 0700); !st) return std::move(st).error();
  // Bundles are unpacked with "never through a symlink" checks on the whole path, so the
  // state directory is used by its canonical name.
  std::error_code ec;
  options.state_dir = fs::canonical(options.state_dir, ec);
  if (ec) return Error::system("resolve", options.state_dir.string(), ec.value());
  std::unique_ptr<Registry> r(new Registry(std::move(options)));
  if (auto st = r->recover(); !st) return std::move(st).error();
  return r;
}

Status Registry::recover() {
  for (const auto* dir : {&functions_dir_, &bundles_dir_, &tmp_dir_}) {
    if (auto st = os::ensure_dir(*dir, 0700); !st) return st;
  }
  // Staging trees of deploys that never finished.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(tmp_dir_, ec)) {
    if (auto st = os::remove_tree(e.path()); !st) return st;
  }
  if (ec) return Error::system("read directory", tmp_dir_.string(), ec.value());

  if (options_.shared) return load_shared();
  std::map<std::string, RecordPtr, std::less<>> table;
  for (const auto& e : fs::directory_iterator(functions_dir_, ec)) {
    std::string file = e.path().filename().string();
    if (os::is_temp_name(file)) {
      if (auto st = os::durable_remove(e.path()); !st) return st;
      continue;
    }
    if (!file.ends_with(kRecordSuffix)) continue;
    std::string name = file.substr(0, file.size() - kRecordSuffix.size());
    auto text = os::read_file(e.path(), kMaxRecordBytes);
    Result<FunctionRecord> record = Error::invalid("unreadable");
    if (text) {
      auto parsed = parse_json(*text, e.path().string());
      record = parsed ? FunctionRecord::from_json(*parsed) : Result<FunctionRecord>(parsed.error());
    } else {
      record = text.error();
    }
    if (!record || record->name != name) {
      // Records are written atomically, so this is damage from outside Ember. Keep the file for
      // the operator and do not guess.
      spdlog::error("registry: skipping function record {}: {}", e.path().string(),
                    record ? "name does not match the file name" : record.error().message);
      // Its bundles may be the only copy of its code: none is deleted while it is there.
      keep_bundles_ = true;
      continue;
    }
    table.emplace(name, std::make_shared<const FunctionRecord>(std::move(*record)));
  }
  if (ec) return Error::system("read directory", functions_dir_.string(), ec.value());
  {
    std::lock_guard lock(table_mu_);
    table_ = std::move(table);
  }
  collect_garbage();
  for (const auto& [name, record] : table_) {
    for (const auto& v : record->versions) {
      if (!fs::is_directory(bundle_dir(v), ec)) {
        spdlog::error("registry: [fn={}] version {} has lost its bundle {}", name, v.number,
                      bundle_dir(v).string());
      }
    }
  }
  spdlog::info("registry: {} functions loaded from {}", table_.size(), options_.state_dir.string());
  return {};
}

void Registry::collect_garbage() {
  if (keep_bundles_) return;
  std::set<std::string> referenced;
  {
    std::lock_guard lock(table_mu_);
    for (const auto& [_, record] : table_) {
      for (const auto& v : record->versions) referenced.insert(v.bundle_sha256);
    }
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(bundles_dir_, ec)) {
    if (referenced.contains(e.path().filename().string())) {
      ::chmod(e.path().c_str(), 0755);  // bundles unpacked before the sandbox were private
      continue;
    }
    if (auto st = os::remove_tree(e.path()); !st) {
      spdlog::warn("registry: cannot remove unused bundle: {}", st.error().message);
    }
  }
}

// ---- Shared store ----

template <class Mutation>
auto Registry::retrying(const std::string& name, Mutation once) -> decltype(once()) {
  for (int attempt = 1;; ++attempt) {
    auto result = once();
    const bool raced = !result.ok() && result.error().code == Errc::kConflict &&
                       result.error().field == "revision";
    if (!raced || attempt == 5) return result;
    // Another node changed the function first: read its change and apply ours on top.
    refresh(name);
  }
}

Status Registry::load_shared() {
  auto stored = options_.shared->load_all();
  if (!stored) return stored.error();
  for (const auto& s : *stored) {
    RecordPtr record = adopt(s);
    if (!record) continue;
    std::lock_guard lock(table_mu_);
    table_[s.name] = record;
    revisions_[s.name] = s.revision;
  }
  collect_garbage();
  spdlog::info("registry: {} functions loaded from the shared store", size());
  return {};
}

RecordPtr Registry::adopt(const StoredRecord& stored) {
  auto parsed = parse_json(stored.json, "record of " + stored.name);
  Result<FunctionRecord> record =
      parsed ? FunctionRecord::from_json(*parsed) : Result<FunctionRecord>(parsed.error());
  if (!record || record->name != stored.name) {
    spdlog::error("registry: skipping the shared record of {}: {}", stored.name,
                  record ? "its name does not match" : record.error().message);
    keep_bundles_ = true;
    return nullptr;
  }
  for (const auto& v : record->versions) {
    if (auto st = materialize(v); !st) {
      spdlog::error("registry: [fn={}] version {} cannot be unpacked here: {}", stored.name,
                    v.number, st.error().message);
      // A version calls may reach: the record waits until it can run (the next notification,
      // or the next full reread, tries again).
      const bool reachable =
          v.number == record->active_version ||
          std::any_of(record->aliases.begin(), record->aliases.end(), [&](const auto& a) {
            return a.second.version == v.number || a.second.canary_version == v.number;
          });
      if (reachable) return nullptr;
    }
  }
  return std::make_shared<const FunctionRecord>(std::move(*record));
}

Status Registry::materialize(const Version& version) {
  const fs::path final_dir = bundle_dir(version);
  std::error_code ec;
  if (fs::is_directory(final_dir, ec)) return {};
  auto archive = options_.shared->get_bundle(version.bundle_sha256);
  if (!archive) return archive.error();
  if (sha256_hex(*archive) != version.bundle_sha256) {
    return Error{Errc::kSystem,
                 "the shared store holds a damaged archive for bundle " + version.bundle_sha256};
  }
  auto format = detect_format(*archive, "");
  if (!format) return format.error();
  auto staging = os::make_temp_dir(tmp_dir_, "fetch-");
  if (!staging) return staging.error();
  Status st;
  if (auto stats = extract_bundle(*archive, *format, *staging, options_.limits); !stats) {
    st = stats.error();
  } else if (::chmod(staging->c_str(), 0755) != 0) {
    st = Error::system("chmod", staging->string(), errno);
  }
  if (st) st = os::sync_filesystem(*staging);
  if (st) st = os::durable_rename(*staging, final_dir);
  if (!st) (void)os::remove_tree(*staging);
  return st;
}

Status Registry::follow(Observer changed) {
  if (!options_.shared) return {};
  const bool start = changed && !following_;
  {
    std::lock_guard lock(observer_mu_);
    observer_ = std::move(changed);
  }
  if (!start) return {};
  following_ = true;
  return options_.shared->watch([this](const std::string& name) { refresh(name); });
}

void Registry::refresh(const std::string& name) {
  if (!options_.shared) return;
  std::vector<std::pair<std::string, RecordPtr>> changes;
  {
    std::lock_guard write_lock(write_mu_);
    std::vector<StoredRecord> stored;
    if (name.empty()) {
      auto all = options_.shared->load_all();
      if (!all) {
        spdlog::warn("registry: cannot read the shared store: {}", all.error().message);
        return;
      }
      stored = std::move(*all);
    } else {
      auto one = options_.shared->load(name);
      if (!one) {
        spdlog::warn("registry: [fn={}] cannot read the shared store: {}", name,
                     one.error().message);
        return;
      }
      if (*one) stored.push_back(std::move(**one));
    }
    std::set<std::string> present;
    for (const auto& s : stored) {
      present.insert(s.name);
      if (revision_of(s.name) == s.revision) continue;  // this node's own write, or no news
      RecordPtr record = adopt(s);
      if (!record) continue;
      std::lock_guard lock(table_mu_);
      table_[s.name] = record;
      revisions_[s.name] = s.revision;
      changes.emplace_back(s.name, record);
    }
    {
      std::lock_guard lock(table_mu_);
      for (auto it = table_.begin(); it != table_.end();) {
        const bool asked = name.empty() || it->first == name;
        if (asked && !present.contains(it->first)) {
          changes.emplace_back(it->first, nullptr);
          revisions_.erase(it->first);
          it = table_.erase(it);
        } else {
          ++it;
        }
      }
    }
    if (!changes.empty()) collect_garbage();
  }
  std::lock_guard lock(observer_mu_);
  for (const auto& [fn, record] : changes) {
    spdlog::info("registry: [fn={}] {} by another node", fn,
                 record ? fmt::format("version {} made active", record->active_version)
                        : std::string("deleted"));
    if (observer_) observer_(fn, record);
  }
}

RecordPtr Registry::catch_up(const std::string& name) {
  if (RecordPtr known = get(name); known || !options_.shared) return known;
  {
    std::lock_guard lock(catch_up_mu_);
    const auto now = options_.clock->now();
    if (now - catch_up_window_ >= std::chrono::seconds(1)) {
      catch_up_window_ = now;
      catch_ups_in_window_ = 0;
      // Names read over a period ago are no longer limited: forget them.
      std::erase_if(caught_up_, [&](const auto& e) { return now - e.second >= kCatchUpEvery; });
    }
    if (catch_ups_in_window_ >= kCatchUpsPerSecond) return nullptr;
    auto [it, fresh] = caught_up_.try_emplace(name, now);
    if (!fresh) {
      if (now - it->second < kCatchUpEvery) return nullptr;
      it->second = now;
    }
    ++catch_ups_in_window_;
  }
  refresh(name);
  return get(name);
}

fs::path Registry::bundle_dir(const Version& version) const {
  return bundles_dir_ / version.bundle_sha256;
}

RecordPtr Registry::get(const std::string& name) const {
  std::lock_guard lock(table_mu_);
  auto it = table_.find(name);
  return it == table_.end() ? nullptr : it->second;
}

std::vector<RecordPtr> Registry::list() const {
  std::lock_guard lock(table_mu_);
  std::vector<RecordPtr> out;
  out.reserve(table_.size());
  for (const auto& [_, record] : table_) out.push_back(record);
  return out;
}

size_t Registry::size() const {
  std::lock_guard lock(table_mu_);
  return table_.size();
}

int64_t Registry::revision_of(const std::string& name) const {
  std::lock_guard lock(table_mu_);
  auto it = revisions_.find(name);
  return it == revisions_.end() ? 0 : it->second;
}

Status Registry::write_record(const FunctionRecord& record) {
  const std::string text = record.to_json().dump(2) + "\n";
  if (!options_.shared) {
    return os::atomic_write_file(functions_dir_ / (record.name + std::string(kRecordSuffix)), text,
                                 0600);
  }
  std::vector<std::string> bundles;
  for (const auto& v : record.versions) bundles.push_back(v.bundle_sha256);
  auto revision = options_.shared->write(record.name, text, bundles, revision_of(record.name));
  if (!revision) return revision.error();
  std::lock_guard lock(table_mu_);
  revisions_[record.name] = *revision;
  return {};
}

Result<Change> Registry::commit(const std::string& name, RecordPtr previous, FunctionRecord next) {
  // Keep the newest versions, and always the active one and those an alias names; their
  // bundles go at the next collection once no version of any function refers to them.
  auto kept = [&](const Version& v) {
    if (v.number == next.active_version) return true;
    return std::any_of(next.aliases.begin(), next.aliases.end(), [&](const auto& entry) {
      return entry.second.version == v.number || entry.second.canary_version == v.number;
    });
  };
  while (static_cast<int>(next.versions.size()) > options_.max_versions) {
    auto victim = std::find_if_not(next.versions.begin(), next.versions.end(), kept);
    if (victim == next.versions.end()) break;
    next.versions.erase(victim);
  }
  next.updated_ms = options_.clock->wall_ms();
  if (auto st = write_record(next); !st) return std::move(st).error();
  auto record = std::make_shared<const FunctionRecord>(std::move(next));
  {
    std::lock_guard lock(table_mu_);
    table_[name] = record;
  }
  collect_garbage();
  if (options_.shared) {
    if (auto st = options_.shared->collect_bundles(); !st) {
      spdlog::warn("registry: cannot collect unused bundles: {}", st.error().message);
    }
  }
  return Change{record, previous == nullptr, true};
}

Result<Change> Registry::deploy(const DeployRequest& req) {
  if (auto st = validate_name(req.name); !st) return std::move(st).error();
  auto format = detect_format(req.bundle, req.content_type);
  if (!format) return std::move(format).error();
  if (req.bundle.size() > options_.limits.max_compressed_bytes) {
    return Error::too_large(fmt::format("bundle is {} bytes, over the limit of {} bytes",
                                        req.bundle.size(), options_.limits.max_compressed_bytes));
  }
  const std::string sha = sha256_hex(req.bundle);

  return retrying(req.name, [&]() -> Result<Change> {
    std::lock_guard write_lock(write_mu_);
    RecordPtr previous = get(req.name);
    fs::path final_dir = bundles_dir_ / sha;
    std::error_code ec;
    const bool have_bundle = fs::is_directory(final_dir, ec);

    fs::path root = final_dir;
    fs::path staging;
    if (!have_bundle) {
      auto dir = os::make_temp_dir(tmp_dir_, "stage-");
      if (!dir) return std::move(dir).error();
      staging = *dir;
      root = staging;
      if (auto stats = extract_bundle(req.bundle, *format, staging, options_.limits); !stats) {
        (void)os::remove_tree(staging);
        return std::move(stats).error();
      }
      // The sandbox shows the bundle to the function's own user: its root must be readable
      // like every entry in it (bundles/ itself stays private to the daemon).
      if (::chmod(staging.c_str(), 0755) != 0) {
        int err = errno;
        (void)os::remove_tree(staging);
        return Error::system("chmod", staging.string(), err);
      }
    }
    auto drop_staging = [&] {
      if (!staging.empty()) (void)os::remove_tree(staging);
    };
    auto config = load_manifest(root, req.overrides);
    if (!config) {
      drop_staging();
      return std::move(config).error();
    }
    if (previous && previous->active().bundle_sha256 == sha &&
        previous->active().config == *config) {
      drop_staging();
      return Change{previous, false, false};
    }
    if (!staging.empty()) {
      // Every unpacked file must be on disk before the rename publishes the tree: after a crash
      // a bundle directory under bundles/ is always complete.
      if (auto st = os::sync_filesystem(staging); !st) {
        drop_staging();
        return std::move(st).error();
      }
      if (auto st = os::durable_rename(staging, final_dir); !st) {
        drop_staging();
        return std::move(st).error();
      }
    }

    // Other nodes fetch the archive by its sha256 when the record reaches them.
    if (options_.shared) {
      if (auto st = options_.shared->put_bundle(sha, req.bundle); !st) {
        return std::move(st).error();
      }
    }
    FunctionRecord next = previous ? *previous : FunctionRecord{};
    const int64_t now = options_.clock->wall_ms();
    if (!previous) {
      next.name = req.name;
      next.created_ms = now;
    }
    int number = next.versions.empty() ? 1 : next.versions.back().number + 1;
    next.versions.push_back(Version{number, sha, req.bundle.size(), std::move(*config), now});
    next.active_version = number;
    return commit(req.name, previous, std::move(next));
  });
}

Result<Change> Registry::deploy_directory(const std::string& name, const fs::path& dir) {
  auto packed = pack_directory(dir);
  if (!packed) return std::move(packed).error();
  return deploy(DeployRequest{name, std::move(*packed), "application/gzip"});
}

Result<Change> Registry::patch(const std::string& name, const json& patch) {
  if (auto st = validate_name(name); !st) return std::move(st).error();
  return retrying(name, [&]() -> Result<Change> {
    std::lock_guard write_lock(write_mu_);
    RecordPtr previous = get(name);
    if (!previous) return Error::not_found(fmt::format("function {} does not exist", name));
    const Version& active = previous->active();
    auto config = patch_config(active.config, patch);
    if (!config) return std::move(config).error();
    if (auto st = check_handler(*config, bundle_dir(active)); !st) return std::move(st).error();
    if (*config == active.config) return Change{previous, false, false};
    FunctionRecord next = *previous;
    int number = next.versions.back().number + 1;
    next.versions.push_back(Version{number, active.bundle_sha256, active.bundle_bytes,
                                    std::move(*config), options_.clock->wall_ms()});
    next.active_version = number;
    return commit(name, previous, std::move(next));
  });
}

Result<Change> Registry::rollback(const std::string& name, int version) {
  if (auto st = validate_name(name); !st) return std::move(st).error();
  return retrying(name, [&]() -> Result<Change> {
    std::lock_guard write_lock(write_mu_);
    RecordPtr previous = get(name);
    if (!previous) return Error::not_found(fmt::format("function {} does not exist", name));
    if (!previous->find(version)) {
      return Error::not_found(fmt::format("function {} has no version {}", name, version));
    }
    if (previous->active_version == version) return Change{previous, false, false};
    FunctionRecord next = *previous;
    next.active_version = version;
    return commit(name, previous, std::move(next));
  });
}

Result<Change> Registry::put_alias(const std::string& function, Alias alias, bool create_only) {
  if (auto st = validate_name(function); !st) return std::move(st).error();
  if (auto st = validate_alias_name(alias.name); !st) return std::move(st).error();
  if (alias.description.size() > kMaxAliasDescription) {
    return Error::invalid(fmt::format("description: at most {} bytes", kMaxAliasDescription),
                          "description");
  }
  if (alias.canary_version > 0) {
    if (!(alias.canary_weight > 0 && alias.canary_weight < 1)) {
      return Error::invalid("canary.weight: must be a share between 0 and 1, both excluded",
                            "canary.weight");
    }
    if (alias.canary_version == alias.version) {
      return Error::invalid("canary.version: must differ from version", "canary.version");
    }
  } else {
    alias.canary_weight = 0;
  }
  return retrying(function, [&]() -> Result<Change> {
    std::lock_guard write_lock(write_mu_);
    RecordPtr previous = get(function);
    if (!previous) return Error::not_found(fmt::format("function {} does not exist", function));
    for (int v : {alias.version, alias.canary_version}) {
      if (v > 0 && !previous->find(v)) {
        return Error::not_found(fmt::format("function {} has no version {}", function, v));
      }
    }
    auto it = previous->aliases.find(alias.name);
    const bool created = it == previous->aliases.end();
    if (!created && create_only) {
      return Error::conflict(
          fmt::format("function {} already has an alias {}", function, alias.name));
    }
    alias.updated_ms = options_.clock->wall_ms();
    if (!created) {
      Alias same = alias;
      same.updated_ms = it->second.updated_ms;
      if (same == it->second) return Change{previous, false, false};
    }
    FunctionRecord next = *previous;
    std::string alias_name = alias.name;
    next.aliases[alias_name] = alias;  // copied: a retry starts again from `alias`
    auto change = commit(function, previous, std::move(next));
    if (change) change->created = created;
    return change;
  });
}

Result<Change> Registry::remove_alias(const std::string& function, std::string_view alias) {
  if (auto st = validate_name(function); !st) return std::move(st).error();
  return retrying(function, [&]() -> Result<Change> {
    std::lock_guard write_lock(write_mu_);
    RecordPtr previous = get(function);
    if (!previous) return Error::not_found(fmt::format("function {} does not exist", function));
    if (previous->aliases.find(alias) == previous->aliases.end()) {
      return Error::not_found(fmt::format("function {} has no alias {}", function, alias));
    }
    FunctionRecord next = *previous;
    next.aliases.erase(next.aliases.find(alias));
    auto change = commit(function, previous, std::move(next));
    if (change) change->created = false;
    return change;
  });
}

Status Registry::remove(const std::string& name) {
  if (auto st = validate_name(name); !st) return st;
  return retrying(name, [&]() -> Status {
    std::lock_guard write_lock(write_mu_);
    if (!get(name)) return Error::not_found(fmt::format("function {} does not exist", name));
    if (options_.shared) {
      if (auto st = options_.shared->remove(name, revision_of(name)); !st) return st;
    } else if (auto st = os::durable_remove(functions_dir_ / (name + std::string(kRecordSuffix)));
               !st) {
      return st;
    }
    {
      std::lock_guard lock(table_mu_);
      table_.erase(name);
      revisions_.erase(name);
    }
    collect_garbage();
    return {};
  });
}

}  // namespace ember::registry
