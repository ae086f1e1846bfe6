// The few cryptographic primitives Ember needs, all delegated to OpenSSL's libcrypto.
#pragma once

#include <string>
#include <string_view>

#include "ember/common/result.h"

namespace ember {

// Lower-case hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);

// Compares two secrets in time that depends only on their lengths.
bool constant_time_equal(std::string_view a, std::string_view b);

// `bytes` bytes from the kernel's CSPRNG, hex encoded (2 * bytes characters).
Result<std::string> random_hex(size_t bytes);

}  // namespace ember
