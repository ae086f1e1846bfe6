#include "ember/registry/bundle.h"

#include <archive.h>
#include <archive_entry.h>
#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <vector>

#include "ember/os/fs.h"
#include "path_parts.h"

namespace ember::registry {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxPathBytes = 1024;
constexpr size_t kMaxComponentBytes = 255;

struct ReadDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct WriteDeleter {
  void operator()(archive* a) const { archive_write_free(a); }
};
using ArchiveReader = std::unique_ptr<archive, ReadDeleter>;
using ArchiveWriter = std::unique_ptr<archive, WriteDeleter>;

std::string printable(std::string_view s) {
  nlohmann::json j = std::string(s.substr(0, 200));
  return j.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
}

Error entry_error(std::string_view entry, std::string_view why) {
  return Error::invalid(fmt::format("bundle entry {}: {}", printable(entry), why));
}

std::string archive_message(archive* a) {
  const char* s = archive_error_string(a);
  return s ? s : "unknown libarchive error";
}

// A failure to write `entry` to disk: the host's fault when the disk is full, read-only or
// failing (a system error, 507 or 500), else the bundle's (two entries at one path, say).
Error write_error(archive* out, std::string_view entry) {
  const int err = archive_errno(out);
  if (err == ENOSPC || err == EDQUOT || err == EIO || err == EROFS || err == ENOMEM) {
    return Error::system("write bundle entry", printable(entry), err);
  }
  return entry_error(entry, archive_message(out));
}

// Splits `path` into components, dropping empty and "." ones. Returns an error message for an
// absolute path or a ".." component, else the normalized relative path ("" for the root).
Result<std::string> normalize_entry_path(std::string_view path) {
  if (path.empty()) return Error::invalid("empty path");
  if (path.front() == '/') return Error::invalid("absolute path");
  if (path.size() > kMaxPathBytes) return Error::invalid("path longer than 1024 bytes");
  std::string out;
  for (std::string_view part : path_parts(path)) {
    if (part.empty() || part == ".") continue;
    if (part == "..") return Error::invalid("path contains a \"..\" component");
    if (part.size() > kMaxComponentBytes) return Error::invalid("path component over 255 bytes");
    if (!out.empty()) out.push_back('/');
    out.append(part);
  }
  return out;
}

// True when a symlink at `entry` (normalized) with relative `target` resolves inside the root,
// judged lexically: extraction refuses to write through symlinks, so no later entry can make
// the lexical answer wrong.
bool symlink_stays_inside(std::string_view entry, std::string_view target) {
  if (target.empty() || target.front() == '/') return false;
  std::vector<std::string_view> stack;
  size_t slash = entry.rfind('/');
  std::string_view dir = slash == std::string_view::npos ? "" : entry.substr(0, slash);
  auto push_parts = [&](std::string_view p) {
    for (std::string_view part : path_parts(p)) {
      if (part.empty() || part == ".") continue;
      if (part != "..") {
        stack.push_back(part);
      } else if (stack.empty()) {
        return false;
      } else {
        stack.pop_back();
      }
    }
    return true;
  };
  return push_parts(dir) && push_parts(target);
}

// ---- zip entry types ----
// libarchive turns a zip entry whose Unix mode says FIFO into a regular file (a workaround for
// an old Info-ZIP habit), so the types are read here from the central directory, where they live
// (the high half of an entry's external attributes when it was made on Unix). Only what the
// directory states plainly is judged; anything unreadable is left to libarchive to refuse.

uint16_t le16(std::string_view d, size_t at) {
  return static_cast<uint16_t>(static_cast<uint8_t>(d[at]) | static_cast<uint8_t>(d[at + 1]) << 8);
}
uint32_t le32(std::string_view d, size_t at) {
  return static_cast<uint32_t>(le16(d, at)) | static_cast<uint32_t>(le16(d, at + 2)) << 16;
}
uint64_t le64(std::string_view d, size_t at) {
  return static_cast<uint64_t>(le32(d, at)) | static_cast<uint64_t>(le32(d, at + 4)) << 32;
}

struct CentralDirectory {
  uint64_t offset = 0;
  uint64_t entries = 0;
};

std::optional<CentralDirectory> find_central_directory(std::string_view d) {
  constexpr size_t kEocd = 22;
  if (d.size() < kEocd) return std::nullopt;
  // The end record sits behind a comment of at most 64 KiB.
  const size_t lowest = d.size() - kEocd > 0xFFFF ? d.size() - kEocd - 0xFFFF : 0;
  for (size_t at = d.size() - kEocd + 1; at-- > lowest;) {
    if (le32(d, at) != 0x06054b50) continue;
    CentralDirectory cd{le32(d, at + 16), le16(d, at + 10)};
    if (cd.offset != 0xFFFFFFFF && cd.entries != 0xFFFF) return cd;
    // Zip64: a locator just before the end record points at the zip64 end record.
    if (at < 20 || le32(d, at - 20) != 0x07064b50) return std::nullopt;
    const uint64_t record = le64(d, at - 20 + 8);
    if (d.size() < 56 || record > d.size() - 56 || le32(d, record) != 0x06064b50) {
      return std::nullopt;
    }
    return CentralDirectory{le64(d, record + 48), le64(d, record + 32)};
  }
  return std::nullopt;
}

// The name of the first entry that the central directory says is a device, FIFO or socket.
std::optional<std::string> zip_special_entry(std::string_view d) {
  constexpr uint8_t kUnix = 3, kDarwin = 19;  // "version made by" systems with Unix modes
  auto cd = find_central_directory(d);
  if (!cd) return std::nullopt;
  size_t at = cd->offset;
  for (uint64_t i = 0; i < cd->entries; ++i) {
    if (at > d.size() || d.size() - at < 46 || le32(d, at) != 0x02014b50) return std::nullopt;
    const uint8_t system = static_cast<uint8_t>(le16(d, at + 4) >> 8);
    const size_t name_len = le16(d, at + 28);
    const size_t extra_len = le16(d, at + 30), comment_len = le16(d, at + 32);
    const uint32_t type = (le32(d, at + 38) >> 16) & S_IFMT;
    if (d.size() - at - 46 < name_len) return std::nullopt;
    if ((system == kUnix || system == kDarwin) && type != 0 && type != S_IFREG && type != S_IFDIR &&
        type != S_IFLNK) {
      return std::string(d.substr(at + 46, name_len));
    }
    at += 46 + name_len + extra_len + comment_len;
  }
  return std::nullopt;
}

}  // namespace

Result<BundleFormat> detect_format(std::string_view data, std::string_view content_type) {
  // Media type without parameters, lower case.
  std::string type(content_type.substr(0, content_type.find(';')));
  type.erase(std::remove_if(type.begin(), type.end(), [](char c) { return c == ' '; }), type.end());
  std::transform(type.begin(), type.end(), type.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });

  bool zip_magic = data.size() >= 4 && data.substr(0, 4) == std::string_view("PK\x03\x04", 4);
  bool empty_zip = data.size() >= 4 && data.substr(0, 4) == std::string_view("PK\x05\x06", 4);
  bool gzip_magic = data.size() >= 2 && static_cast<unsigned char>(data[0]) == 0x1f &&
                    static_cast<unsigned char>(data[1]) == 0x8b;

  bool says_zip = type == "application/zip" || type == "application/x-zip-compressed";
  bool says_gzip = type == "application/gzip" || type == "application/x-gzip" ||
                   type == "application/x-tar+gzip" || type == "application/x-compressed-tar";
  if (says_zip && !zip_magic && !empty_zip) {
    return Error::invalid("body is not a zip archive although Content-Type says " + type);
  }
  if (says_gzip && !gzip_magic) {
    return Error::invalid("body is not gzip data although Content-Type says " + type);
  }
  if (zip_magic || empty_zip) return BundleFormat::kZip;
  if (gzip_magic) return BundleFormat::kTarGz;
  if (data.empty()) return Error::invalid("the bundle is empty; send a zip or tar.gz archive");
  return Error::unsupported("the bundle is neither a zip nor a tar.gz archive");
}

Result<ExtractStats> extract_bundle(std::string_view data, BundleFormat format,
                                    const fs::path& dest, const BundleLimits& limits) {
  if (data.size() > limits.max_compressed_bytes) {
    return Error::too_large(fmt::format("bundle is {} bytes, over the limit of {} bytes",
                                        data.size(), limits.max_compressed_bytes));
  }
  if (format == BundleFormat::kZip) {
    if (auto special = zip_special_entry(data)) {
      return entry_error(*special, "devices, FIFOs and sockets are not allowed in a bundle");
    }
  }
  ArchiveReader in(archive_read_new());
  if (format == BundleFormat::kZip) {
    archive_read_support_format_zip(in.get());
  } else {
    archive_read_support_filter_gzip(in.get());
    archive_read_support_format_tar(in.get());
  }
  if (archive_read_open_memory(in.get(), data.data(), data.size()) != ARCHIVE_OK) {
    return Error::invalid("bundle cannot be read: " + archive_message(in.get()));
  }

  ArchiveWriter out(archive_write_disk_new());
  // No owners, no permissions beyond the normalized ones set below, never through a symlink,
  // never "..", never replace an earlier entry.
  archive_write_disk_set_options(out.get(), ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                                                ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                                ARCHIVE_EXTRACT_NO_OVERWRITE);

  const uint64_t ratio_limit =
      std::max(limits.ratio_floor_bytes, limits.max_ratio * static_cast<uint64_t>(data.size()));
  auto bomb_error = [&](std::string_view name) {
    return entry_error(name, fmt::format("the bundle expands more than {} times its size of {} "
                                         "bytes (a decompression bomb?)",
                                         limits.max_ratio, data.size()));
  };
  ExtractStats stats;
  std::set<std::string> regular_files;
  archive_entry* entry = nullptr;
  while (true) {
    int rc = archive_read_next_header(in.get(), &entry);
    if (rc == ARCHIVE_EOF) break;
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
      return Error::invalid("bundle cannot be read: " + archive_message(in.get()));
    }
    const char* raw_name = archive_entry_pathname(entry);
    std::string name = raw_name ? raw_name : "";
    if (!raw_name) return Error::invalid("bundle has an entry whose name cannot be decoded");

    if (++stats.entries > limits.max_entries) {
      return Error::invalid(fmt::format("bundle has more than {} entries", limits.max_entries));
    }
    auto rel = normalize_entry_path(name);
    if (!rel) return entry_error(name, rel.error().message);
    if (rel->empty()) continue;  // "./" itself

    const mode_t type = archive_entry_filetype(entry);
    const char* hardlink = archive_entry_hardlink(entry);
    if (hardlink) {
      auto target = normalize_entry_path(hardlink);
      if (!target) return entry_error(name, "hard link target: " + target.error().message);
      if (!regular_files.contains(*target)) {
        return entry_error(name, "hard link to " + printable(hardlink) +
                                     ", which is not an earlier regular file of the bundle");
      }
      archive_entry_set_hardlink(entry, (dest / *target).c_str());
    } else if (type == AE_IFLNK) {
      const char* target = archive_entry_symlink(entry);
      if (!target || !symlink_stays_inside(*rel, target)) {
        return entry_error(name, "symbolic link to " + printable(target ? target : "") +
                                     " points outside the bundle");
      }
    } else if (type == AE_IFREG) {
      regular_files.insert(*rel);
    } else if (type != AE_IFDIR) {
      return entry_error(name, "devices, FIFOs and sockets are not allowed in a bundle");
    }

    // Owner-writable, world-readable, executable where any x bit was set; setuid, setgid and
    // sticky bits are dropped.
    mode_t perm = archive_entry_perm(entry);
    if (type == AE_IFDIR) {
      perm = 0755;
    } else if (type == AE_IFLNK) {
      perm = 0777;
    } else {
      perm = (perm & 0111) ? 0755 : 0644;
    }
    archive_entry_set_perm(entry, perm);

    if (archive_entry_size_is_set(entry) && type == AE_IFREG && !hardlink) {
      auto size = static_cast<uint64_t>(std::max<la_int64_t>(0, archive_entry_size(entry)));
      // Declared sizes are checked before the entry is created: once libarchive has opened a
      // file it extends it to the declared size when the entry is abandoned.
      if (stats.bytes + size > limits.max_extracted_bytes) {
        return entry_error(name, fmt::format("unpacks past the limit of {} bytes in all",
                                             limits.max_extracted_bytes));
      }
      if (stats.bytes + size > ratio_limit) return bomb_error(name);
    }
    archive_entry_set_pathname(entry, (dest / *rel).c_str());

    if (archive_write_header(out.get(), entry) != ARCHIVE_OK) return write_error(out.get(), name);
    if (type == AE_IFREG && !hardlink) {
      const void* block = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      while (true) {
        int r = archive_read_data_block(in.get(), &block, &size, &offset);
        if (r == ARCHIVE_EOF) break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
          return entry_error(name, "cannot be read: " + archive_message(in.get()));
        }
        // Counted before writing, so a bomb is stopped before the disk sees the excess. Holes
        // of sparse entries count as data: they are bytes a reader of the file will see.
        uint64_t end = static_cast<uint64_t>(offset) + size;
        stats.bytes += size;
        if (stats.bytes > limits.max_extracted_bytes || end > limits.max_extracted_bytes) {
          return entry_error(name, fmt::format("unpacks past the limit of {} bytes in all",
                                               limits.max_extracted_bytes));
        }
        if (stats.bytes > ratio_limit) return bomb_error(name);
        if (archive_write_data_block(out.get(), block, size, offset) != ARCHIVE_OK) {
          return write_error(out.get(), name);
        }
      }
    }
    if (archive_write_finish_entry(out.get()) != ARCHIVE_OK) return write_error(out.get(), name);
  }
  if (archive_write_close(out.get()) != ARCHIVE_OK) return write_error(out.get(), "(closing)");
  return stats;
}

namespace {

la_ssize_t append_to_string(archive*, void* client, const void* buffer, size_t length) {
  static_cast<std::string*>(client)->append(static_cast<const char*>(buffer), length);
  return static_cast<la_ssize_t>(length);
}

}  // namespace

Result<std::string> pack_directory(const fs::path& dir) {
  std::error_code ec;
  std::vector<fs::path> paths;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    paths.push_back(it->path());
  }
  if (ec) return Error::system("read directory", dir.string(), ec.value());
  std::sort(paths.begin(), paths.end());

  std::string result;
  ArchiveWriter out(archive_write_new());
  archive_write_set_format_pax_restricted(out.get());
  archive_write_add_filter_gzip(out.get());
  // gzip would otherwise store the current time in its header.
  archive_write_set_filter_option(out.get(), "gzip", "timestamp", nullptr);
  if (archive_write_open2(out.get(), &result, nullptr, append_to_string, nullptr, nullptr) !=
      ARCHIVE_OK) {
    return Error::invalid("pack " + dir.string() + ": " + archive_message(out.get()));
  }
  std::unique_ptr<archive_entry, decltype(&archive_entry_free)> entry(archive_entry_new(),
                                                                      archive_entry_free);
  for (const auto& path : paths) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return Error::system("stat", path.string(), errno);
    archive_entry_clear(entry.get());
    archive_entry_set_pathname(entry.get(), path.lexically_relative(dir).c_str());
    std::string content;
    if (S_ISDIR(st.st_mode)) {
      archive_entry_set_filetype(entry.get(), AE_IFDIR);
      archive_entry_set_perm(entry.get(), 0755);
    } else if (S_ISLNK(st.st_mode)) {
      archive_entry_set_filetype(entry.get(), AE_IFLNK);
      archive_entry_set_perm(entry.get(), 0777);
      archive_entry_set_symlink(entry.get(), fs::read_symlink(path, ec).c_str());
      if (ec) return Error::system("readlink", path.string(), ec.value());
    } else if (S_ISREG(st.st_mode)) {
      auto data = os::read_file(path, 1ull << 30);
      if (!data) return std::move(data).error();
      content = std::move(*data);
      archive_entry_set_filetype(entry.get(), AE_IFREG);
      archive_entry_set_perm(entry.get(), (st.st_mode & 0111) ? 0755 : 0644);
      archive_entry_set_size(entry.get(), static_cast<la_int64_t>(content.size()));
    } else {
      return Error::invalid(path.string() + " is not a regular file, directory or symlink");
    }
    if (archive_write_header(out.get(), entry.get()) != ARCHIVE_OK ||
        (!content.empty() && archive_write_data(out.get(), content.data(), content.size()) < 0)) {
      return Error::invalid("pack " + path.string() + ": " + archive_message(out.get()));
    }
  }
  if (archive_write_close(out.get()) != ARCHIVE_OK) {
    return Error::invalid("pack " + dir.string() + ": " + archive_message(out.get()));
  }
  return result;
}

}  // namespace ember::registry
