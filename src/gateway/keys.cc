#include "ember/gateway/keys.h"

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

}  // namespace

Result<std::unique_ptr<InvokeKeys>> InvokeKeys::open(const fs::path& state_dir) {
  auto master = load_or_create_secret(state_dir / "keys.master");
  if (!master) return std::move(master).error();
  const fs::path file = state_dir / "keys.json";
  std::vector<Key> keys;
  std::error_code ec;
  if (fs::exists(file, ec)) {
    auto text = os::read_file(file, kMaxFileBytes);
    if (!text) return std::move(text).error();
    json doc = json::parse(*text, nullptr, false);
    if (!doc.is_object() || !doc["keys"].is_array()) {
      return Error::invalid(file.string() + " is not a key list");
    }
    for (const auto& k : doc["keys"]) {
      if (!k.is_object() || !k["id"].is_string() || !k["function"].is_string()) continue;
      keys.push_back(Key{k["id"], k["function"], k.value("created_ms", int64_t{0})});
    }
  }
  return std::unique_ptr<InvokeKeys>(new InvokeKeys(file, std::move(*master), std::move(keys)));
}

std::string InvokeKeys::secret_of(std::string_view id) const {
  return hex(hmac_sha256(master_, std::string("ember invoke key ") + std::string(id)))
      .substr(0, 40);
}

Status InvokeKeys::save() const {
  json list = json::array();
  for (const auto& k : keys_) {
    list.push_back({{"id", k.id}, {"function", k.function}, {"created_ms", k.created_ms}});
  }
  return os::atomic_write_file(file_, json{{"keys", list}}.dump(2) + "\n", 0600);
}

Result<InvokeKeys::Created> InvokeKeys::create(const std::string& function, int64_t now_ms) {
  auto random = random_hex(8);
  if (!random) return std::move(random).error();
  std::string id = "EMBK" + *random;
  std::transform(id.begin(), id.end(), id.begin(), [](unsigned char c) { return std::toupper(c); });
  std::lock_guard lock(mu_);
  keys_.push_back(Key{id, function, now_ms});
  if (auto st = save(); !st) {
    keys_.pop_back();
    return std::move(st).error();
  }
  std::string secret = secret_of(id);
  return Created{keys_.back(), secret, id + "." + secret};
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
  auto it = std::find_if(keys_.begin(), keys_.end(),
                         [&](const Key& k) { return k.id == id && k.function == function; });
  if (it == keys_.end()) return false;
  const Key removed = *it;
  keys_.erase(it);
  if (auto st = save(); !st) {
    keys_.push_back(removed);
    return std::move(st).error();
  }
  return true;
}

Status InvokeKeys::forget(const std::string& function) {
  std::lock_guard lock(mu_);
  const size_t before = keys_.size();
  std::erase_if(keys_, [&](const Key& k) { return k.function == function; });
  return keys_.size() == before ? Status{} : save();
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
