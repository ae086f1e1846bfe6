#include "ember/gateway/keys.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "ember/common/crypto.h"
#include "ember/gateway/auth.h"
#include "ember/os/fs.h"

namespace ember::gateway {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr size_t kMaxFileBytes = 16 << 20;

// keys.json and keys.master in the state directory: the list is written whole, atomically,
// after every change.
class FileKeyStore final : public KeyStore {
 public:
  explicit FileKeyStore(fs::path state_dir) : dir_(std::move(state_dir)) {}

  Result<std::string> master() override { return load_or_create_secret(dir_ / "keys.master"); }

  Result<std::vector<InvokeKey>> load() override {
    const fs::path file = dir_ / "keys.json";
    keys_.clear();
    std::error_code ec;
    if (!fs::exists(file, ec)) return keys_;
    auto text = os::read_file(file, kMaxFileBytes);
    if (!text) return std::move(text).error();
    json doc = json::parse(*text, nullptr, false);
    if (!doc.is_object() || !doc["keys"].is_array()) {
      return Error::invalid(file.string() + " is not a key list");
    }
    for (const auto& k : doc["keys"]) {
      if (!k.is_object() || !k["id"].is_string() || !k["function"].is_string()) continue;
      keys_.push_back(InvokeKey{k["id"], k["function"], k.value("created_ms", int64_t{0})});
    }
    return keys_;
  }

  Status add(const InvokeKey& key) override {
    keys_.push_back(key);
    Status st = save();
    if (!st) keys_.pop_back();
    return st;
  }

  Result<bool> remove(const std::string& function, std::string_view id) override {
    auto it = std::find_if(keys_.begin(), keys_.end(), [&](const InvokeKey& k) {
      return k.id == id && k.function == function;
    });
    if (it == keys_.end()) return false;
    const InvokeKey removed = *it;
    keys_.erase(it);
    if (auto st = save(); !st) {
      keys_.push_back(removed);
      return std::move(st).error();
    }
    return true;
  }

  Status remove_function(const std::string& function) override {
    const size_t before = keys_.size();
    std::erase_if(keys_, [&](const InvokeKey& k) { return k.function == function; });
    return keys_.size() == before ? Status{} : save();
  }

 private:
  Status save() const {
    json list = json::array();
    for (const auto& k : keys_) {
      list.push_back({{"id", k.id}, {"function", k.function}, {"created_ms", k.created_ms}});
    }
    return os::atomic_write_file(dir_ / "keys.json", json{{"keys", list}}.dump(2) + "\n", 0600);
  }

  fs::path dir_;
  std::vector<InvokeKey> keys_;  // under InvokeKeys' lock
};

}  // namespace

std::unique_ptr<KeyStore> file_key_store(const fs::path& state_dir) {
  return std::make_unique<FileKeyStore>(state_dir);
}

Result<std::unique_ptr<InvokeKeys>> InvokeKeys::open(const fs::path& state_dir) {
  return open(file_key_store(state_dir));
}

Result<std::unique_ptr<InvokeKeys>> InvokeKeys::open(std::unique_ptr<KeyStore> store) {
  auto master = store->master();
  if (!master) return std::move(master).error();
  auto keys = store->load();
  if (!keys) return std::move(keys).error();
  KeyStore& s = *store;
  std::unique_ptr<InvokeKeys> k(
      new InvokeKeys(std::move(store), std::move(*master), std::move(*keys)));
  if (auto st = s.watch([raw = k.get()] { raw->reload(); }); !st) return std::move(st).error();
  return k;
}

void InvokeKeys::reload() {
  // Read without the lock: checks on the event loop never wait for the database.
  auto keys = store_->load();
  if (!keys) {
    spdlog::warn("keys: cannot read the invoke keys again: {}", keys.error().message);
    return;
  }
  std::lock_guard lock(mu_);
  keys_ = std::move(*keys);
}

std::string InvokeKeys::secret_of(std::string_view id) const {
  return hex(hmac_sha256(master_, std::string("ember invoke key ") + std::string(id)))
      .substr(0, 40);
}

Result<InvokeKeys::Created> InvokeKeys::create(const std::string& function, int64_t now_ms) {
  auto random = random_hex(8);
  if (!random) return std::move(random).error();
  std::string id = "EMBK" + *random;
  std::transform(id.begin(), id.end(), id.begin(), [](unsigned char c) { return std::toupper(c); });
  std::lock_guard lock(mu_);
  Key key{id, function, now_ms};
  if (auto st = store_->add(key); !st) return std::move(st).error();
  keys_.push_back(key);
  std::string secret = secret_of(id);
  return Created{key, secret, id + "." + secret};
}

std::vector<InvokeKeys::Key> InvokeKeys::list(const std::string& function) const {
  std::lock_guard lock(mu_);
  std::vector<Key> out;
  for (const auto& k : keys_) {
    if (k.function == function) out.push_back(k);
  }
  return out;
}

Result<bool> InvokeKeys::revoke(const std::string& function, std::string_view id) {
  std::lock_guard lock(mu_);
  auto removed = store_->remove(function, id);
  if (!removed) return removed;
  std::erase_if(keys_, [&](const Key& k) { return k.id == id && k.function == function; });
  return removed;
}

Status InvokeKeys::forget(const std::string& function) {
  std::lock_guard lock(mu_);
  if (auto st = store_->remove_function(function); !st) return st;
  std::erase_if(keys_, [&](const Key& k) { return k.function == function; });
  return {};
}

std::optional<std::pair<InvokeKeys::Key, std::string>> InvokeKeys::find(std::string_view id) const {
  std::lock_guard lock(mu_);
  for (const auto& k : keys_) {
    if (k.id == id) return std::make_pair(k, secret_of(id));
  }
  return std::nullopt;
}

bool InvokeKeys::authorizes(std::string_view token, std::string_view function) const {
  const size_t dot = token.find('.');
  if (dot == std::string_view::npos) return false;
  auto key = find(token.substr(0, dot));
  return key && key->first.function == function &&
         constant_time_equal(token.substr(dot + 1), key->second);
}

}  // namespace ember::gateway
