// Admin authentication: one bearer token, compared in constant time.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "ember/common/result.h"

namespace ember::gateway {

// Reads a secret kept in `path` (at least 16 characters), or creates it (mode 0600, 32 random
// bytes as hex) when absent.
Result<std::string> load_or_create_secret(const std::filesystem::path& path);

// Reads <state_dir>/admin.token, or creates it (mode 0600, 32 random bytes as hex) when absent.
Result<std::string> load_or_create_admin_token(const std::filesystem::path& state_dir);

// True when `authorization` is "Bearer <token>" (scheme case-insensitive) and the token equals
// `expected`. The comparison takes the same time whatever the two tokens share.
bool bearer_matches(std::string_view authorization, std::string_view expected);

// The token of an "Authorization: Bearer <token>" header; nullopt for another scheme.
std::optional<std::string_view> bearer_token(std::string_view authorization);

}  // namespace ember::gateway
