// Admin authentication: one bearer token, compared in constant time.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "ember/common/result.h"

namespace ember::gateway {

// Reads <state_dir>/admin.token, or creates it (mode 0600, 32 random bytes as hex) when absent.
Result<std::string> load_or_create_admin_token(const std::filesystem::path& state_dir);

// True when `authorization` is "Bearer <token>" (scheme case-insensitive) and the token equals
// `expected`. The comparison takes the same time whatever the two tokens share.
bool bearer_matches(std::string_view authorization, std::string_view expected);

}  // namespace ember::gateway
