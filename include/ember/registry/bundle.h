// Function bundles: zip or tar.gz archives from untrusted users, unpacked by libarchive under
// checks that make a hostile archive fail with a message naming the bad entry.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "ember/common/result.h"

namespace ember::registry {

enum class BundleFormat { kZip, kTarGz };

struct BundleLimits {
  uint64_t max_compressed_bytes = 50ull << 20;  // the archive as uploaded
  uint64_t max_extracted_bytes = 250ull << 20;  // sum of all file sizes once unpacked
  uint64_t max_entries = 20000;
  // An archive may expand to at most max_ratio times its size, once it has produced more than
  // ratio_floor_bytes (small archives of text legitimately compress very well).
  uint64_t max_ratio = 200;
  uint64_t ratio_floor_bytes = 1ull << 20;
};

// Decides the format from the magic bytes. An explicit `content_type` (application/zip,
// application/gzip and their aliases) must agree with them; any other type, or none, is sniffed,
// because curl --data-binary and -T send generic types.
Result<BundleFormat> detect_format(std::string_view data, std::string_view content_type);

struct ExtractStats {
  uint64_t entries = 0;
  uint64_t bytes = 0;
};

// Unpacks `data` into `dest`, an existing empty directory given by an absolute path without
// symlinks. Rejects absolute paths, ".." components, links that leave the tree, devices, FIFOs
// and sockets; clears setuid, setgid and sticky bits; stops at the limits before writing past
// them. On error `dest` may hold a partial tree: the caller removes it.
Result<ExtractStats> extract_bundle(std::string_view data, BundleFormat format,
                                    const std::filesystem::path& dest, const BundleLimits& limits);

// Packs a directory into a tar.gz whose bytes depend only on the tree's paths, modes, link
// targets and contents (sorted entries, zero times and owners), so packing unchanged content
// twice gives the same sha256.
Result<std::string> pack_directory(const std::filesystem::path& dir);

}  // namespace ember::registry
