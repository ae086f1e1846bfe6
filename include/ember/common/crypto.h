// The few cryptographic primitives Ember needs, all delegated to OpenSSL's libcrypto.
#pragma once

#include <string>
#include <string_view>

#include "ember/common/result.h"

namespace ember {

// Lower-case hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);

// The raw 32-byte HMAC-SHA256 of `data` under `key`.
std::string hmac_sha256(std::string_view key, std::string_view data);

// Lower-case hex of raw bytes.
std::string hex(std::string_view bytes);

// Compares two secrets in time that depends only on their lengths.
bool constant_time_equal(std::string_view a, std::string_view b);

// A random id in the form of a UUID, version 4 (8-4-4-4-12 hex digits): unique, not secret (a
// per-thread generator seeded once from the kernel). Request ids and event ids.
std::string random_uuid();

// `bytes` bytes from the kernel's CSPRNG, hex encoded (2 * bytes characters).
Result<std::string> random_hex(size_t bytes);

}  // namespace ember
