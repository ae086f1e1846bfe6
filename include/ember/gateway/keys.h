// Per-function invoke keys (docs/api.md#invoke-keys): they authorize invoking one function whose
// manifest says "auth": "token", as a bearer token or as the credentials of an AWS
// Signature V4 request. A key's secret is derived from a master secret (keys.master in the state
// directory, mode 0600, or a row of the shared database) with HMAC-SHA256 over the key's id, so
// nothing stored per key reveals it: it is shown once, at creation, and a revoked key's id is
// forgotten at once. Every check reads a copy in memory. Thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ember/common/result.h"

namespace ember::gateway {

struct InvokeKey {
  std::string id;  // 20 characters, like an AWS access key id
  std::string function;
  int64_t created_ms = 0;
};

// Where keys and the master secret are kept: the state directory (keys.json, keys.master), or
// PostgreSQL for several nodes (tables ember_keys, ember_secrets), where a key made or revoked
// on one node reaches the others by a notification.
class KeyStore {
 public:
  virtual ~KeyStore() = default;
  // The master secret, created on first use (once, whichever node comes first).
  virtual Result<std::string> master() = 0;
  virtual Result<std::vector<InvokeKey>> load() = 0;
  virtual Status add(const InvokeKey& key) = 0;
  // True when the function had the key.
  virtual Result<bool> remove(const std::string& function, std::string_view id) = 0;
  virtual Status remove_function(const std::string& function) = 0;
  // Shared stores: calls `changed` on a thread of their own after any node changed the keys
  // (or the connection was found again, when anything may have changed).
  virtual Status watch(std::function<void()> /*changed*/) { return {}; }
};

std::unique_ptr<KeyStore> file_key_store(const std::filesystem::path& state_dir);
Result<std::unique_ptr<KeyStore>> postgres_key_store(const std::string& conninfo);

class InvokeKeys {
 public:
  using Key = InvokeKey;
  struct Created {
    Key key;
    std::string secret;  // the SigV4 secret access key
    std::string token;   // "<id>.<secret>": the bearer token
  };

  // Loads <state_dir>/keys.json and the master secret, creating both when absent.
  static Result<std::unique_ptr<InvokeKeys>> open(const std::filesystem::path& state_dir);
  // Loads the keys of `store`, and follows what other nodes change.
  static Result<std::unique_ptr<InvokeKeys>> open(std::unique_ptr<KeyStore> store);

  Result<Created> create(const std::string& function, int64_t now_ms);
  std::vector<Key> list(const std::string& function) const;
  // True when the function had the key; it authorizes nothing from now on.
  Result<bool> revoke(const std::string& function, std::string_view id);
  // The function is gone, and its keys with it.
  Status forget(const std::string& function);

  // The live key `id` names and its secret, for checking a signature.
  std::optional<std::pair<Key, std::string>> find(std::string_view id) const;
  // True when `token` ("<id>.<secret>") is a live key of `function`.
  bool authorizes(std::string_view token, std::string_view function) const;

 private:
  InvokeKeys(std::unique_ptr<KeyStore> store, std::string master, std::vector<Key> keys)
      : master_(std::move(master)), keys_(std::move(keys)), store_(std::move(store)) {}
  std::string secret_of(std::string_view id) const;
  void reload();

  std::string master_;
  mutable std::mutex mu_;
  std::vector<Key> keys_;            // the store's, as last read or written
  std::unique_ptr<KeyStore> store_;  // last: a shared store's thread stops first
};

}  // namespace ember::gateway
