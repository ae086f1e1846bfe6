// A function bundle as uploaded (registry::detect_format, then registry::extract_bundle into a
// fresh directory), zip or tar.gz. Checked after every archive, accepted or not: nothing was
// written outside the directory, no link inside leads out of it, no device, FIFO or socket and
// no setuid, setgid or sticky bit exists, and an accepted archive stayed within its limits.
#include "ember/registry/bundle.h"

#include <fuzzer/FuzzedDataProvider.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <system_error>

namespace fs = std::filesystem;
using namespace ember::registry;

namespace {

// A directory of its own, removed at exit.
struct Base {
  fs::path dir;
  Base() {
    char tmpl[] = "/tmp/ember-fuzz-bundle-XXXXXX";
    if (!::mkdtemp(tmpl)) std::abort();
    dir = tmpl;
  }
  ~Base() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

const fs::path& base() {
  static const Base b;
  return b.dir;
}

// Aborts unless `dest` holds only what extract_bundle promises, within `limits` when `accepted`.
void check_tree(const fs::path& dest, const BundleLimits& limits, bool accepted) {
  const fs::path root = fs::canonical(dest);
  uint64_t entries = 0, bytes = 0;
  std::map<ino_t, nlink_t> links;  // regular files with several names: names found inside
  std::map<ino_t, nlink_t> expected;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dest, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    ++entries;
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) std::abort();
    if (st.st_mode & (S_ISUID | S_ISGID | S_ISVTX)) std::abort();
    if (S_ISREG(st.st_mode)) {
      bytes += static_cast<uint64_t>(st.st_size);
      if (st.st_nlink > 1) {
        ++links[st.st_ino];
        expected[st.st_ino] = st.st_nlink;
      }
    } else if (S_ISLNK(st.st_mode)) {
      // Resolved as far as it exists: a link may dangle, but never point out of the tree.
      const fs::path target = fs::weakly_canonical(it->path(), ec);
      if (ec) {
        ec.clear();
        continue;
      }
      const auto rel = target.lexically_relative(root);
      if (rel.empty() || *rel.begin() == "..") std::abort();
    } else if (!S_ISDIR(st.st_mode)) {
      std::abort();
    }
  }
  // A hard link to a file outside would have a name outside: every name is inside.
  if (links != expected) std::abort();
  if (accepted && (entries > limits.max_entries || bytes > limits.max_extracted_bytes)) {
    std::abort();
  }
  // Nothing beside the destination, nor beside its parent.
  for (const auto& dir : {dest.parent_path(), base()}) {
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.path() != dest && entry.path() != dest.parent_path()) std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  static const char* const kTypes[] = {"", "application/zip", "application/gzip",
                                       "application/x-tar", "application/octet-stream"};
  const char* type = kTypes[in.ConsumeIntegralInRange<size_t>(0, 4)];
  const std::string archive = in.ConsumeRemainingBytesAsString();
  auto format = detect_format(archive, type);
  if (!format) return 0;
  BundleLimits limits;
  limits.max_compressed_bytes = 1 << 20;
  limits.max_extracted_bytes = 8 << 20;
  limits.max_entries = 500;
  // Two levels down, so that an escape by one or two levels is seen.
  const fs::path dest = base() / "outer" / "bundle";
  fs::create_directories(dest);
  auto stats = extract_bundle(archive, *format, dest, limits);
  check_tree(dest, limits, static_cast<bool>(stats));
  fs::remove_all(dest);
  return 0;
}
