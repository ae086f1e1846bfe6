#include "bundle.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

namespace ember::cli {

namespace fs = std::filesystem;

namespace {

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryDeleter {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

la_ssize_t append_to(archive*, void* out, const void* data, size_t size) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(data), size);
  return static_cast<la_ssize_t>(size);
}

Result<std::string> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error::system("read", path.string(), errno);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) return Error::system("read", path.string(), errno);
  return bytes.str();
}

Error archive_error(archive* a, const std::string& what) {
  return Error::invalid("cannot pack " + what + ": " + archive_error_string(a));
}

Result<std::string> pack(const fs::path& root) {
  // Sorted paths: the same folder gives the same bytes, and emberd sees an unchanged bundle as
  // no new version.
  std::vector<fs::path> paths;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->path().filename() == ".git") {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    paths.push_back(it->path());
  }
  if (ec) return Error::system("read the folder", root.string(), ec.value());
  std::sort(paths.begin(), paths.end());

  std::string out;
  std::unique_ptr<archive, ArchiveDeleter> a(archive_write_new());
  archive_write_set_format_pax_restricted(a.get());
  archive_write_add_filter_gzip(a.get());
  // No time in the gzip header, and none in the entries: the bytes depend on the folder's
  // contents only.
  archive_write_set_filter_option(a.get(), "gzip", "timestamp", nullptr);
  archive_write_set_bytes_in_last_block(a.get(), 1);
  if (archive_write_open2(a.get(), &out, nullptr, append_to, nullptr, nullptr) != ARCHIVE_OK) {
    return archive_error(a.get(), root.string());
  }
  for (const fs::path& path : paths) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return Error::system("read", path.string(), errno);
    const std::string name = fs::relative(path, root).generic_string();
    std::unique_ptr<archive_entry, EntryDeleter> entry(archive_entry_new());
    archive_entry_set_pathname(entry.get(), name.c_str());
    archive_entry_set_perm(entry.get(), st.st_mode & 07777);
    std::string contents;
    if (S_ISDIR(st.st_mode)) {
      archive_entry_set_filetype(entry.get(), AE_IFDIR);
    } else if (S_ISLNK(st.st_mode)) {
      archive_entry_set_filetype(entry.get(), AE_IFLNK);
      archive_entry_set_symlink(entry.get(), fs::read_symlink(path).c_str());
    } else if (S_ISREG(st.st_mode)) {
      auto bytes = read_file(path);
      if (!bytes) return bytes.error();
      contents = std::move(*bytes);
      archive_entry_set_filetype(entry.get(), AE_IFREG);
      archive_entry_set_size(entry.get(), static_cast<la_int64_t>(contents.size()));
    } else {
      return Error::invalid(path.string() +
                            " is neither a file, a folder nor a symbolic link: a bundle "
                            "cannot hold it");
    }
    if (archive_write_header(a.get(), entry.get()) != ARCHIVE_OK) {
      return archive_error(a.get(), path.string());
    }
    if (!contents.empty() && archive_write_data(a.get(), contents.data(), contents.size()) < 0) {
      return archive_error(a.get(), path.string());
    }
  }
  if (archive_write_close(a.get()) != ARCHIVE_OK) return archive_error(a.get(), root.string());
  return out;
}

}  // namespace

Result<std::string> read_bundle(const std::string& path) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec) return Error::system("read", path, ec.value());
  if (fs::is_directory(status)) return pack(path);
  return read_file(path);  // emberd tells a zip from a tar.gz by its first bytes
}

}  // namespace ember::cli
