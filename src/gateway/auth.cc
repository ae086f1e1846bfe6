#include "ember/gateway/auth.h"

#include <sys/stat.h>

#include <cctype>

#include "ember/common/crypto.h"
#include "ember/os/fs.h"

namespace ember::gateway {

namespace fs = std::filesystem;

Result<std::string> load_or_create_secret(const fs::path& path) {
  std::error_code ec;
  if (fs::exists(fs::symlink_status(path, ec))) {
    auto text = os::read_file(path, 4096);
    if (!text) return std::move(text).error();
    std::string secret = *text;
    while (!secret.empty() && std::isspace(static_cast<unsigned char>(secret.back()))) {
      secret.pop_back();
    }
    if (secret.size() < 16) {
      return Error::invalid(path.string() + " holds a secret shorter than 16 characters");
    }
    return secret;
  }
  auto secret = random_hex(32);
  if (!secret) return std::move(secret).error();
  if (auto st = os::atomic_write_file(path, *secret + "\n", 0600); !st) {
    return std::move(st).error();
  }
  return secret;
}

Result<std::string> load_or_create_admin_token(const fs::path& state_dir) {
  return load_or_create_secret(state_dir / "admin.token");
}

std::optional<std::string_view> bearer_token(std::string_view authorization) {
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() < kScheme.size()) return std::nullopt;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != kScheme[i]) {
      return std::nullopt;
    }
  }
  std::string_view token = authorization.substr(kScheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  return token;
}

bool bearer_matches(std::string_view authorization, std::string_view expected) {
  auto token = bearer_token(authorization);
  if (!token || expected.empty()) return false;
  // Hashing first makes the comparison independent of the token lengths too.
  return constant_time_equal(sha256_hex(*token), sha256_hex(expected));
}

}  // namespace ember::gateway
