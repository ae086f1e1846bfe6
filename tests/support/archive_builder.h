// Builds zip and tar.gz archives in memory, entry by entry, including the hostile entries a
// real packer would refuse to make (absolute paths, "..", devices, links out of the tree).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace ember::testing {

enum class ArchiveKind { kZip, kTarGz };

class ArchiveBuilder {
 public:
  explicit ArchiveBuilder(ArchiveKind kind) : kind_(kind) {}

  ArchiveBuilder& file(const std::string& path, const std::string& content, mode_t perm = 0644);
  ArchiveBuilder& dir(const std::string& path, mode_t perm = 0755);
  ArchiveBuilder& symlink(const std::string& path, const std::string& target);
  ArchiveBuilder& hardlink(const std::string& path, const std::string& target);
  // A character device, block device or FIFO: `type` is AE_IFCHR, AE_IFBLK or AE_IFIFO.
  ArchiveBuilder& special(const std::string& path, unsigned type);
  // A file of `size` zero bytes, produced without holding it in memory twice.
  ArchiveBuilder& zeros(const std::string& path, size_t size);

  std::string build() const;

 private:
  struct Entry {
    std::string path;
    unsigned type;
    mode_t perm;
    std::string content;
    std::string link;
    bool hard = false;
    size_t zero_bytes = 0;
  };
  ArchiveKind kind_;
  std::vector<Entry> entries_;
};

// `zip` with the central directory entry of `name` rewritten to say it was made on Unix with
// file type `type` (S_IFIFO...): how `zip -FI` stores a FIFO. libarchive reads such an entry as
// a regular file, so only the central directory tells.
std::string zip_with_unix_type(std::string zip, const std::string& name, unsigned type);

// A minimal valid function bundle: function.json plus index.js.
std::string hello_bundle(ArchiveKind kind, const std::string& manifest =
                                               R"({"runtime":"node","handler":"index.handler"})");

}  // namespace ember::testing
