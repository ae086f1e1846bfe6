#include <archive.h>
#include <archive_entry.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "archive_builder.h"
#include "temp_dir.h"

namespace ember::testing {

namespace fs = std::filesystem;

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "ember-test-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t count_entries(const fs::path& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

ArchiveBuilder& ArchiveBuilder::file(const std::string& path, const std::string& content,
                                     mode_t perm) {
  entries_.push_back({path, AE_IFREG, perm, content, {}, false, 0});
  return *this;
}
ArchiveBuilder& ArchiveBuilder::dir(const std::string& path, mode_t perm) {
  entries_.push_back({path, AE_IFDIR, perm, {}, {}, false, 0});
  return *this;
}
ArchiveBuilder& ArchiveBuilder::symlink(const std::string& path, const std::string& target) {
  entries_.push_back({path, AE_IFLNK, 0777, {}, target, false, 0});
  return *this;
}
ArchiveBuilder& ArchiveBuilder::hardlink(const std::string& path, const std::string& target) {
  entries_.push_back({path, AE_IFREG, 0644, {}, target, true, 0});
  return *this;
}
ArchiveBuilder& ArchiveBuilder::special(const std::string& path, unsigned type) {
  entries_.push_back({path, type, 0644, {}, {}, false, 0});
  return *this;
}
std::string zip_with_unix_type(std::string zip, const std::string& name, unsigned type) {
  const std::string signature("PK\x01\x02", 4);
  for (size_t at = zip.find(signature); at != std::string::npos; at = zip.find(signature, at + 4)) {
    const size_t name_len = static_cast<uint8_t>(zip[at + 28]) |
                            static_cast<size_t>(static_cast<uint8_t>(zip[at + 29])) << 8;
    if (zip.compare(at + 46, name_len, name) != 0) continue;
    zip[at + 5] = 3;  // "version made by": Unix
    const uint32_t attributes = (type | 0644u) << 16;
    for (int i = 0; i < 4; ++i) zip[at + 38 + i] = static_cast<char>(attributes >> (8 * i));
    return zip;
  }
  return zip;
}

ArchiveBuilder& ArchiveBuilder::zeros(const std::string& path, size_t size) {
  entries_.push_back({path, AE_IFREG, 0644, {}, {}, false, size});
  return *this;
}

namespace {
la_ssize_t append(archive*, void* client, const void* buffer, size_t length) {
  static_cast<std::string*>(client)->append(static_cast<const char*>(buffer), length);
  return static_cast<la_ssize_t>(length);
}
}  // namespace

std::string ArchiveBuilder::build() const {
  std::string out;
  std::unique_ptr<archive, decltype(&archive_write_free)> a(archive_write_new(),
                                                            archive_write_free);
  if (kind_ == ArchiveKind::kZip) {
    archive_write_set_format_zip(a.get());
  } else {
    archive_write_set_format_pax_restricted(a.get());
    archive_write_add_filter_gzip(a.get());
  }
  archive_write_open2(a.get(), &out, nullptr, append, nullptr, nullptr);
  for (const auto& e : entries_) {
    archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, e.path.c_str());
    archive_entry_set_filetype(entry, e.type);
    archive_entry_set_perm(entry, e.perm);
    if (e.type == AE_IFLNK) archive_entry_set_symlink(entry, e.link.c_str());
    if (e.hard) {
      archive_entry_set_hardlink(entry, e.link.c_str());
      archive_entry_set_size(entry, 0);
    } else if (e.type == AE_IFREG) {
      archive_entry_set_size(
          entry, static_cast<la_int64_t>(e.zero_bytes ? e.zero_bytes : e.content.size()));
    }
    if (archive_write_header(a.get(), entry) != ARCHIVE_OK) {
      std::string msg = archive_error_string(a.get()) ? archive_error_string(a.get()) : "?";
      archive_entry_free(entry);
      throw std::runtime_error("archive_write_header " + e.path + ": " + msg);
    }
    if (e.zero_bytes) {
      std::string chunk(1 << 16, '\0');
      for (size_t left = e.zero_bytes; left > 0;) {
        size_t n = std::min(left, chunk.size());
        archive_write_data(a.get(), chunk.data(), n);
        left -= n;
      }
    } else if (!e.content.empty() && !e.hard) {
      archive_write_data(a.get(), e.content.data(), e.content.size());
    }
    archive_entry_free(entry);
  }
  archive_write_close(a.get());
  return out;
}

std::string hello_bundle(ArchiveKind kind, const std::string& manifest) {
  return ArchiveBuilder(kind)
      .file("function.json", manifest)
      .file("index.js", "exports.handler = async (event) => ({ hello: 'world' });\n")
      .build();
}

}  // namespace ember::testing
