// Instances made by a cold start: a new sandboxed worker process running the function's runtime
// shim, which loads the handler and reports READY. Also the launch recipe itself: the command
// line and environment each runtime gets.
#pragma once

#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "ember/kv/service.h"
#include "ember/registry/registry.h"
#include "ember/runtime/bytecode.h"
#include "ember/runtime/instance_factory.h"
#include "ember/sandbox/sandbox.h"
#include "ember/worker/instance.h"

namespace ember::runtime {

struct RuntimeOptions {
  std::filesystem::path runtimes_dir;  // holds node/bootstrap.js and python/bootstrap.py
  std::string node_path = "/usr/bin/node";
  std::string python_path = "/usr/bin/python3";
  // Python workers are forks of ember-python-zygote, an interpreter started once, instead of
  // each starting python3 (docs/sandbox.md#the-python-zygote). Read at start only.
  bool python_zygote = true;
};

// Where a worker finds things, as it sees them (inside the sandbox, or the host's paths without
// one).
struct WorkerPaths {
  std::string task_root;               // the bundle
  std::filesystem::path runtime_root;  // the runtime shims
};

// The launch recipe for `record`'s active version, whose bundle is at `bundle_dir` on the host:
// the runtime's command line and an environment built from scratch, so that nothing of the
// daemon's own environment reaches a function.
Result<worker::LaunchSpec> launch_spec(const registry::FunctionRecord& record,
                                       const std::filesystem::path& bundle_dir,
                                       const WorkerPaths& paths, const RuntimeOptions& options);

// Whether the function's environment sets a variable read only as a process starts (by the C
// library, the dynamic loader, OpenSSL, node): such a function needs a process started with its
// environment, never one made before it (a pre-started worker, a fork of the python zygote).
bool reads_env_at_process_start(const registry::FunctionConfig& config);

// The command line of `runtime`'s worker; for node, its heap is sized from `memory_mb`.
std::vector<std::string> runtime_argv(registry::Runtime runtime, int memory_mb,
                                      const WorkerPaths& paths, const RuntimeOptions& options);

// The launch recipe of a pre-started worker of `runtime` (docs/sandbox.md#pre-initialised-workers):
// no function, the base environment with EMBER_POOLED=1, cwd "/".
worker::LaunchSpec pooled_spec(registry::Runtime runtime, int memory_mb, const WorkerPaths& paths,
                               const RuntimeOptions& options);

// Owned by the daemon's wiring; used on the event loop's thread.
class ColdStartFactory final : public InstanceFactory {
 public:
  // `kv` serves the workers' key-value requests; without it they are refused.
  ColdStartFactory(boost::asio::io_context& io, sandbox::Sandbox& sandbox,
                   const registry::Registry& registry, RuntimeOptions options,
                   kv::Service* kv = nullptr);

  Result<std::shared_ptr<Instance>> start(const registry::FunctionRecord& record,
                                          worker::LogSink log) override;
  void forget(const std::string& function) override;
  // Compiles a python function's bundle to bytecode (BytecodeCompiler).
  void prepare(const registry::FunctionRecord& record) override;
  // The same for the version `spec` (a python worker's recipe) launches, unless asked already:
  // for a bundle deployed before the daemon started, at its first start. Its spawn waits for
  // kCompileAfterStart, so that it holds the event loop after that start, not during it.
  void compile_bytecode(const worker::LaunchSpec& spec,
                        std::chrono::milliseconds delay = kCompileAfterStart);
  static constexpr std::chrono::milliseconds kCompileAfterStart{1000};
  const BytecodeCompiler& bytecode() const { return bytecode_; }
  // The launch recipe for `record`'s active version with its key-value and invoke handlers.
  Result<worker::LaunchSpec> function_spec(const registry::FunctionRecord& record) const;
  // The launch recipe of a pre-started worker, with this factory's paths and interpreters.
  worker::LaunchSpec pooled(registry::Runtime runtime, int memory_mb) const;
  sandbox::Sandbox& sandbox() { return sandbox_; }
  // Serves the workers' calls of other functions (context.invoke); without it they are refused.
  void set_invoke_handler(worker::InvokeHandler handler) { invoke_ = std::move(handler); }
  // A reloaded configuration: interpreters apply to the next start.
  void set_options(RuntimeOptions options) { options_ = std::move(options); }

 private:
  boost::asio::io_context& io_;
  sandbox::Sandbox& sandbox_;
  const registry::Registry& registry_;
  RuntimeOptions options_;
  kv::Service* kv_;
  worker::InvokeHandler invoke_;
  BytecodeCompiler bytecode_;
};

}  // namespace ember::runtime
