// Per-function invoke keys (docs/api.md#invoke-keys): they authorize invoking one function whose
// manifest says "auth": "token", as a bearer token or as the credentials of an AWS
// Signature V4 request. A key's secret is derived from a master secret kept in the state
// directory (keys.master, mode 0600) with HMAC-SHA256 over the key's id, so nothing stored per
// key reveals it: it is shown once, at creation, and a revoked key's id is forgotten at once.
// Thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ember/common/result.h"

namespace ember::gateway {

class InvokeKeys {
 public:
  struct Key {
    std::string id;  // 20 characters, like an AWS access key id
    std::string function;
    int64_t created_ms = 0;
  };
  struct Created {
    Key key;
    std::string secret;  // the SigV4 secret access key
    std::string token;   // "<id>.<secret>": the bearer token
  };

  // Loads <state_dir>/keys.json and the master secret, creating both when absent.
  static Result<std::unique_ptr<InvokeKeys>> open(const std::filesystem::path& state_dir);

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
  InvokeKeys(std::filesystem::path file, std::string master, std::vector<Key> keys)
      : file_(std::move(file)), master_(std::move(master)), keys_(std::move(keys)) {}
  std::string secret_of(std::string_view id) const;
  Status save() const;  // with mu_ held

  std::filesystem::path file_;
  std::string master_;
  mutable std::mutex mu_;
  std::vector<Key> keys_;
};

}  // namespace ember::gateway
