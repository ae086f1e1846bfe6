#include "ember/os/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <system_error>

#include "ember/common/crypto.h"

namespace ember::os {
namespace {

constexpr std::string_view kTempPrefix = ".tmp-";

fs::path parent_of(const fs::path& path) {
  fs::path parent = path.parent_path();
  return parent.empty() ? fs::path(".") : parent;
}

}  // namespace

Result<UniqueFd> open_file(const fs::path& path, int flags, mode_t mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return Error::system("open", path.string(), errno);
  return UniqueFd(fd);
}

Status write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::system("write", "", errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

Result<std::string> read_file(const fs::path& path, size_t max_bytes) {
  auto fd = open_file(path, O_RDONLY | O_NOFOLLOW);
  if (!fd) return std::move(fd).error();
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0) return Error::system("stat", path.string(), errno);
  if (!S_ISREG(st.st_mode)) return Error::invalid(path.string() + " is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return Error::too_large(path.string() + " is larger than " + std::to_string(max_bytes) +
                            " bytes");
  }
  std::string out;
  out.resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::read(fd->get(), out.data() + got, out.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::system("read", path.string(), errno);
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return out;
}

Status fsync_path(const fs::path& path) {
  auto fd = open_file(path, O_RDONLY);
  if (!fd) return std::move(fd).error();
  if (::fsync(fd->get()) != 0) return Error::system("fsync", path.string(), errno);
  return {};
}

Status sync_filesystem(const fs::path& path) {
  auto fd = open_file(path, O_RDONLY);
  if (!fd) return std::move(fd).error();
  if (::syncfs(fd->get()) != 0) return Error::system("syncfs", path.string(), errno);
  return {};
}

Status atomic_write_file(const fs::path& path, std::string_view data, mode_t mode) {
  auto suffix = random_hex(6);
  if (!suffix) return std::move(suffix).error();
  fs::path dir = parent_of(path);
  fs::path temp = dir / (std::string(kTempPrefix) + path.filename().string() + "." + *suffix);

  auto fd = open_file(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
  if (!fd) return std::move(fd).error();
  auto fail = [&](Error e) -> Status {
    ::unlink(temp.c_str());
    return e;
  };
  // open() applies the umask; the caller's mode is the contract (0600 for secrets).
  if (::fchmod(fd->get(), mode) != 0) return fail(Error::system("chmod", temp.string(), errno));
  if (auto st = write_all(fd->get(), data); !st) {
    return fail(Error::system("write", temp.string(), st.error().sys_errno));
  }
  // The data must reach the disk before the rename makes it visible, or a crash could expose
  // a renamed but empty file.
  if (::fsync(fd->get()) != 0) return fail(Error::system("fsync", temp.string(), errno));
  fd->reset();
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    return fail(Error::system("rename", temp.string(), errno));
  }
  return fsync_path(dir);
}

Status durable_remove(const fs::path& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Error::system("unlink", path.string(), errno);
  }
  return fsync_path(parent_of(path));
}

Status durable_rename(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return Error::system("rename", from.string() + " to " + to.string(), errno);
  }
  if (auto st = fsync_path(parent_of(to)); !st) return st;
  if (parent_of(from) != parent_of(to)) return fsync_path(parent_of(from));
  return {};
}

Status ensure_dir(const fs::path& path, mode_t mode) {
  std::error_code ec;
  if (!path.parent_path().empty() && !fs::exists(path.parent_path(), ec)) {
    if (auto st = ensure_dir(path.parent_path(), 0755); !st) return st;
  }
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    return Error::system("mkdir", path.string(), errno);
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Error::system("stat", path.string(), errno);
  if (!S_ISDIR(st.st_mode)) return Error::invalid(path.string() + " is not a directory");
  return {};
}

Status remove_tree(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return Error::system("remove", path.string(), ec.value());
  return {};
}

Result<fs::path> make_temp_dir(const fs::path& parent, std::string_view prefix) {
  std::string tmpl = (parent / (std::string(prefix) + "XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) return Error::system("mkdtemp", tmpl, errno);
  return fs::path(tmpl);
}

bool is_temp_name(std::string_view file_name) { return file_name.starts_with(kTempPrefix); }

}  // namespace ember::os
