// Filesystem operations with the durability rules of the state directory: a file is either the
// old or the new content after a crash at any instant, never a mix, never missing.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <string_view>

#include "ember/common/result.h"
#include "ember/os/unique_fd.h"

namespace ember::os {

namespace fs = std::filesystem;

Result<UniqueFd> open_file(const fs::path& path, int flags, mode_t mode = 0);

Status write_all(int fd, std::string_view data);

// Reads a whole regular file, refusing symlinks and files larger than `max_bytes`.
Result<std::string> read_file(const fs::path& path, size_t max_bytes);

// Writes `data` to a temporary file beside `path`, fsyncs it, renames it over `path` and fsyncs
// the directory, so that after a crash at any point `path` holds either its old or its new
// content. Temporary names start with ".tmp-" (see is_temp_name) so start-up can sweep them.
Status atomic_write_file(const fs::path& path, std::string_view data, mode_t mode);

// Removes `path` and fsyncs its directory so the removal survives a crash.
Status durable_remove(const fs::path& path);

// Renames `from` to `to` (same filesystem) and fsyncs the directories of both.
Status durable_rename(const fs::path& from, const fs::path& to);

Status fsync_path(const fs::path& path);

// Flushes every dirty page of the filesystem holding `path`; one call instead of one fsync per
// file when a whole extracted tree must be durable.
Status sync_filesystem(const fs::path& path);

// Creates `path` and missing parents with `mode`, and checks it is a directory.
Status ensure_dir(const fs::path& path, mode_t mode);

// Removes a tree; a missing path is not an error.
Status remove_tree(const fs::path& path);

// Creates a fresh directory "<parent>/<prefix>XXXXXX" with mode 0700.
Result<fs::path> make_temp_dir(const fs::path& parent, std::string_view prefix);

// True for names atomic_write_file uses for its temporary files.
bool is_temp_name(std::string_view file_name);

}  // namespace ember::os
