// Python bytecode compiled once per bundle instead of at every cold start
// (docs/functions.md#python). The compiler (runtimes/python/compile.py) runs sandboxed as the
// function, with the bundle read-only, and only writes to its standard output; what it sends is
// checked and written into the bundle here, as `__pycache__/<module>.<tag>.pyc` beside each
// module, where the import system of every worker finds it.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "ember/common/result.h"
#include "ember/sandbox/sandbox.h"
#include "ember/worker/instance.h"

namespace ember::runtime {

// The compiler's output, read as it arrives: its cache tag first, then one record per module.
class BytecodeStream {
 public:
  struct Module {
    std::string source;  // the .py file's path in the bundle
    std::string pyc;     // the bytes of its .pyc
  };
  static constexpr size_t kMaxTag = 64;
  static constexpr size_t kMaxPath = 4096;
  static constexpr size_t kMaxPyc = 64u << 20;

  void feed(std::string_view bytes) { buffer_.append(bytes); }
  // The next module once it has arrived whole; nullopt until then. An error when the stream
  // breaks its format or limits: nothing after it can be trusted.
  Result<std::optional<Module>> next();
  // Empty until the tag has arrived.
  const std::string& tag() const { return tag_; }

 private:
  std::string buffer_;
  size_t pos_ = 0;
  std::string tag_;
};

// Writes `module` into the bundle at `bundle_dir` as `<dir>/__pycache__/<stem>.<tag>.pyc`, unless
// a file of that name is there (the bundle's own, or an earlier run's). The source must be a
// relative path of plain names, ending in .py, of a regular file of the bundle reached through
// directories only; the tag, letters, digits, '-' and '_'. Anything else is refused (kInvalid).
// The file appears whole or not at all (written aside, then renamed).
Status store_pyc(const std::filesystem::path& bundle_dir, std::string_view tag,
                 const BytecodeStream::Module& module);

// Runs the compiler for bundles on the event loop's thread. Owned by ColdStartFactory.
class BytecodeCompiler {
 public:
  static constexpr std::chrono::seconds kTimeout{60};

  BytecodeCompiler(boost::asio::io_context& io, sandbox::Sandbox& sandbox)
      : io_(io), sandbox_(sandbox) {}
  ~BytecodeCompiler();
  BytecodeCompiler(const BytecodeCompiler&) = delete;
  BytecodeCompiler& operator=(const BytecodeCompiler&) = delete;

  // Compiles the bundle of the python worker `spec` describes (its function, bundle and limits),
  // in the background, after `delay`, unless this daemon has already done it for that bundle or
  // is doing it. `compiler`: the command line of compile.py, whose last argument is the bundle's
  // root as the worker sees it.
  void compile(const worker::LaunchSpec& spec, std::vector<std::string> compiler,
               std::chrono::milliseconds delay = std::chrono::milliseconds(0));
  // Whether compile() was asked for this bundle since the daemon started.
  bool asked(const std::string& bundle_dir) const { return bundles_.contains(bundle_dir); }

  // Modules stored by the runs that have finished.
  uint64_t stored() const { return stored_; }
  // Compiles asked for and not finished (waiting for their delay, or running): 0 once every
  // bundle compile() was called for is done, so nothing asked for can be missed by a waiter.
  int running() const { return running_; }

 private:
  boost::asio::awaitable<void> run(sandbox::WorkerSpec worker, std::vector<std::string> argv,
                                   std::string cwd, std::chrono::milliseconds delay,
                                   std::shared_ptr<bool> alive);

  boost::asio::io_context& io_;
  sandbox::Sandbox& sandbox_;
  std::set<std::string> bundles_;
  uint64_t stored_ = 0;
  int running_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace ember::runtime
