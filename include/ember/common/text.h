// Text encodings at the HTTP boundary: events carry bodies as UTF-8 text or base64.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ember {

// True when `s` is well-formed UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF).
bool is_valid_utf8(std::string_view s);

// Standard base64 with padding (OpenSSL).
std::string base64_encode(std::string_view data);
// nullopt when `text` is not valid base64.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace ember
