#include "ember/runtime/bytecode.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <vector>

#include "ember/common/async.h"
#include "ember/os/fs.h"
#include "ember/os/unique_fd.h"

namespace ember::runtime {

namespace asio = boost::asio;

namespace {

uint32_t get_u32(std::string_view s, size_t at) {
  auto u = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(s[at + i])); };
  return u(0) | (u(1) << 8) | (u(2) << 16) | (u(3) << 24);
}

bool valid_tag(std::string_view tag) {
  if (tag.empty() || tag.size() > BytecodeStream::kMaxTag) return false;
  for (char c : tag) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

// One name of a path: not empty, not "." or "..", no '/' or NUL.
bool plain_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of(std::string_view("/\0", 2)) == std::string_view::npos;
}

Error refused(std::string_view source, std::string_view why) {
  return Error::invalid("bytecode for " + std::string(source) + ": " + std::string(why));
}

}  // namespace

Result<std::optional<BytecodeStream::Module>> BytecodeStream::next() {
  const std::string_view data = std::string_view(buffer_).substr(pos_);
  if (tag_.empty()) {
    if (data.size() < 4) return std::optional<Module>();
    const uint32_t len = get_u32(data, 0);
    if (len == 0 || len > kMaxTag) return Error::invalid("bytecode: a cache tag of bad length");
    if (data.size() < 4 + len) return std::optional<Module>();
    tag_.assign(data.substr(4, len));
    pos_ += 4 + len;
    return next();
  }
  if (data.size() < 8) return std::optional<Module>();
  const uint32_t path_len = get_u32(data, 0);
  const uint32_t pyc_len = get_u32(data, 4);
  if (path_len == 0 || path_len > kMaxPath || pyc_len > kMaxPyc) {
    return Error::invalid("bytecode: a record over the limits");
  }
  if (data.size() < 8 + size_t{path_len} + pyc_len) return std::optional<Module>();
  Module m{std::string(data.substr(8, path_len)), std::string(data.substr(8 + path_len, pyc_len))};
  pos_ += 8 + size_t{path_len} + pyc_len;
  // What was taken goes once it is most of the buffer: records are read as they arrive.
  if (pos_ > buffer_.size() / 2) {
    buffer_.erase(0, pos_);
    pos_ = 0;
  }
  return std::optional<Module>(std::move(m));
}

Status store_pyc(const std::filesystem::path& bundle_dir, std::string_view tag,
                 const BytecodeStream::Module& module) {
  const std::string_view source = module.source;
  if (!valid_tag(tag)) return refused(source, "a cache tag of other characters");
  if (source.size() > BytecodeStream::kMaxPath || !source.ends_with(".py")) {
    return refused(source, "not the path of a .py file");
  }
  // The 16-byte header every .pyc starts with (magic, flags, and what it is checked against).
  if (module.pyc.size() < 16) return refused(source, "too short to be a .pyc");
  std::vector<std::string_view> names;
  for (size_t at = 0; at <= source.size();) {
    const size_t slash = std::min(source.find('/', at), source.size());
    names.push_back(source.substr(at, slash - at));
    at = slash + 1;
  }
  for (std::string_view name : names) {
    if (!plain_name(name)) return refused(source, "not a relative path of plain names");
  }
  const std::string file(names.back());
  const std::string stem = file.substr(0, file.size() - 3);
  if (stem.empty()) return refused(source, "no module name");

  // Down to the module's directory through directories only: no link is followed.
  os::UniqueFd dir(::open(bundle_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) return Error::system("open", bundle_dir.string(), errno);
  for (size_t i = 0; i + 1 < names.size(); ++i) {
    const std::string name(names[i]);
    os::UniqueFd sub(
        ::openat(dir.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub) return refused(source, "not a directory of the bundle");
    dir = std::move(sub);
  }
  struct stat st {};
  if (::fstatat(dir.get(), file.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
    return refused(source, "not a file of the bundle");
  }
  if (::mkdirat(dir.get(), "__pycache__", 0755) != 0 && errno != EEXIST) {
    return Error::system("mkdir __pycache__", std::string(source), errno);
  }
  os::UniqueFd cache(
      ::openat(dir.get(), "__pycache__", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!cache) return refused(source, "__pycache__ is not a directory");
  const std::string name = stem + "." + std::string(tag) + ".pyc";
  if (::fstatat(cache.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return {};  // there
  const std::string aside = "." + name + ".tmp";
  ::unlinkat(cache.get(), aside.c_str(), 0);  // left by a daemon that died writing it
  {
    os::UniqueFd out(::openat(cache.get(), aside.c_str(),
                              O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!out) return Error::system("create", name, errno);
    if (auto st_write = os::write_all(out.get(), module.pyc); !st_write) {
      ::unlinkat(cache.get(), aside.c_str(), 0);
      return st_write;
    }
  }
  // No fsync: a .pyc cut short by a crash fails the import system's checks, which then compiles
  // the source, as it would without one.
  if (::renameat2(cache.get(), aside.c_str(), cache.get(), name.c_str(), RENAME_NOREPLACE) != 0) {
    const int e = errno;
    ::unlinkat(cache.get(), aside.c_str(), 0);
    if (e != EEXIST) return Error::system("rename", name, e);
  }
  return {};
}

BytecodeCompiler::~BytecodeCompiler() { *alive_ = false; }

void BytecodeCompiler::compile(const worker::LaunchSpec& spec, std::vector<std::string> compiler,
                               std::chrono::milliseconds delay) {
  if (!bundles_.insert(spec.worker.bundle_dir).second) return;
  sandbox::WorkerSpec worker = spec.worker;
  worker.pooled = false;
  worker.zygote = false;  // its own python3: the zygote's children run the shim
  ++running_;             // until run() ends, whichever way
  asio::co_spawn(io_, run(std::move(worker), std::move(compiler), spec.cwd, delay, alive_),
                 log_escaped("bytecode compiler"));
}

asio::awaitable<void> BytecodeCompiler::run(sandbox::WorkerSpec worker,
                                            std::vector<std::string> argv, std::string cwd,
                                            std::chrono::milliseconds delay,
                                            std::shared_ptr<bool> alive) {
  struct Done {
    BytecodeCompiler& self;
    const std::shared_ptr<bool>& alive;
    ~Done() {
      if (*alive) --self.running_;
    }
  } done{*this, alive};
  if (delay.count() > 0) {
    asio::steady_timer wait(io_, delay);
    co_await wait.async_wait(kAwait);
    if (!*alive) co_return;
  }
  const auto began = std::chrono::steady_clock::now();
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) co_return;
  sandbox::SpawnRequest request;
  request.argv = std::move(argv);
  // Nothing of the function's environment: compiling needs none of it.
  request.env = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/tmp"};
  request.cwd = std::move(cwd);
  request.fds = {-1, out[1], -1, -1};
  auto child = sandbox_.spawn(std::move(request), worker);
  ::close(out[1]);
  if (!child) {
    ::close(out[0]);
    spdlog::warn("bytecode: [fn={}] the compiler did not start: {}", worker.function,
                 child.error().message);
    co_return;
  }
  asio::posix::stream_descriptor output(io_, out[0]);
  asio::steady_timer deadline(io_);
  deadline.expires_after(kTimeout);
  bool timed_out = false;
  deadline.async_wait([&output, &timed_out](boost::system::error_code ec) {
    if (ec) return;  // cancelled: the run ended first (nothing else is touched then)
    timed_out = true;
    output.cancel();
  });
  BytecodeStream stream;
  std::array<char, 64 * 1024> buffer;
  uint64_t stored = 0;
  std::string failure;
  while (failure.empty()) {
    auto [ec, n] = co_await output.async_read_some(asio::buffer(buffer), kAwait);
    stream.feed(std::string_view(buffer.data(), n));
    while (true) {
      auto module = stream.next();
      if (!module) {
        failure = module.error().message;
        break;
      }
      if (!*module) break;
      // Small files, written to the page cache: short enough for the event loop.
      if (auto st = store_pyc(worker.bundle_dir, stream.tag(), **module); !st) {
        failure = st.error().message;
        break;
      }
      ++stored;
    }
    if (ec) break;  // end of file, or the deadline
  }
  deadline.cancel();
  if (timed_out) failure = "it ran for over " + std::to_string(kTimeout.count()) + " s";
  if (!failure.empty()) (void)child->process.signal(SIGKILL);
  asio::posix::stream_descriptor exit_watch(io_, ::dup(child->process.pidfd()));
  co_await exit_watch.async_wait(asio::posix::stream_descriptor::wait_read, kAwait);
  auto status = child->process.wait();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - began)
                      .count();
  if (failure.empty() && status && (status->signaled || status->code != 0)) {
    failure = "it " + status->describe();
  }
  if (failure.empty()) {
    spdlog::debug("bytecode: [fn={}] {} modules compiled in {} ms", worker.function, stored, ms);
  } else {
    spdlog::warn("bytecode: [fn={}] compiling stopped after {} modules: {}", worker.function,
                 stored, failure);
  }
  if (*alive) stored_ += stored;
}

}  // namespace ember::runtime
