#include "ember/runtime/cold_start.h"

#include <algorithm>

#include "ember/runtime/kv_bridge.h"
#include "process_instance.h"

namespace ember::runtime {

namespace asio = boost::asio;

namespace {

// The region functions are told they run in: Ember has one, and Lambda's runtimes and SDKs
// need a name for it.
constexpr const char* kRegion = "us-east-1";

// The environment every worker starts with, whatever its function.
std::vector<std::string> base_env() {
  return {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "TZ=UTC", "HOME=/tmp"};
}

}  // namespace

bool reads_env_at_process_start(const registry::FunctionConfig& config) {
  constexpr std::string_view kAtStart[] = {"LD_",      "GLIBC_TUNABLES", "MALLOC_",
                                           "OPENSSL_", "LANG",           "LC_"};
  for (const auto& [name, _] : config.env) {
    for (std::string_view prefix : kAtStart) {
      if (name.starts_with(prefix)) return true;
    }
    if (config.runtime == registry::Runtime::kNode &&
        (name.starts_with("NODE_") || name.starts_with("UV_"))) {
      return true;
    }
  }
  return false;
}

std::vector<std::string> runtime_argv(registry::Runtime runtime, int memory_mb,
                                      const WorkerPaths& paths, const RuntimeOptions& options) {
  switch (runtime) {
    case registry::Runtime::kNode:
      return {options.node_path,
              "--max-old-space-size=" + std::to_string(std::max(16, memory_mb * 3 / 4)),
              (paths.runtime_root / "node" / "bootstrap.js").string()};
    case registry::Runtime::kPython:
      return {options.python_path, "-I", "-S", "-u",
              (paths.runtime_root / "python" / "bootstrap.py").string()};
    case registry::Runtime::kProvided:
      // The bundle's bootstrap, started by the Runtime API shim (docs/lambda.md).
      return {(paths.runtime_root / "provided" / "ember-runtime-api").string()};
  }
  return {};
}

Result<worker::LaunchSpec> launch_spec(const registry::FunctionRecord& record,
                                       const std::filesystem::path& bundle_dir,
                                       const WorkerPaths& paths, const RuntimeOptions& options) {
  const registry::Version& v = record.active();
  const registry::FunctionConfig& c = v.config;
  worker::LaunchSpec spec;
  spec.function = record.name;
  spec.version = v.number;
  spec.concurrency = c.concurrency;
  spec.cwd = paths.task_root;
  spec.worker.function = record.name;
  spec.worker.bundle_dir = bundle_dir.string();
  spec.worker.memory_mb = c.memory_mb;
  spec.worker.tmp_mb = c.tmp_mb;
  spec.worker.host_network = c.network == "host";
  // Built from scratch: nothing of the daemon's own environment reaches a function. A variable
  // of the base environment that the function sets (TZ, PATH, ...) is the function's, once.
  for (std::string entry : base_env()) {
    if (!c.env.contains(entry.substr(0, entry.find('=')))) spec.env.push_back(std::move(entry));
  }
  for (std::string entry :
       {"_HANDLER=" + c.handler, "LAMBDA_TASK_ROOT=" + paths.task_root,
        "EMBER_FUNCTION_NAME=" + record.name, "EMBER_FUNCTION_VERSION=" + std::to_string(v.number),
        "EMBER_MEMORY_MB=" + std::to_string(c.memory_mb),
        "EMBER_CONCURRENCY=" + std::to_string(c.concurrency)}) {
    spec.env.push_back(std::move(entry));
  }
  // What Lambda's runtimes read (runtime interface clients take context from these).
  const std::string version = std::to_string(v.number);
  spec.env.push_back("AWS_LAMBDA_FUNCTION_NAME=" + record.name);
  spec.env.push_back("AWS_LAMBDA_FUNCTION_VERSION=" + version);
  spec.env.push_back("AWS_LAMBDA_FUNCTION_MEMORY_SIZE=" + std::to_string(c.memory_mb));
  spec.env.push_back("AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/" + record.name);
  spec.env.push_back("AWS_LAMBDA_LOG_STREAM_NAME=[" + version + "]" + record.name);
  spec.env.push_back("AWS_LAMBDA_INITIALIZATION_TYPE=on-demand");
  spec.env.push_back("LAMBDA_RUNTIME_DIR=" + paths.runtime_root.string());
  for (const char* region : {"AWS_REGION", "AWS_DEFAULT_REGION"}) {
    if (!c.env.contains(region)) spec.env.push_back(std::string(region) + "=" + kRegion);
  }
  for (const auto& [k, val] : c.env) spec.env.push_back(k + "=" + val);
  spec.argv = runtime_argv(c.runtime, c.memory_mb, paths, options);
  if (c.runtime == registry::Runtime::kProvided) spec.concurrency = 1;
  // A python worker is a fork of the python zygote when there is one (the sandbox decides), as
  // a python3 started with this environment would be.
  spec.worker.zygote = c.runtime == registry::Runtime::kPython && !reads_env_at_process_start(c);
  return spec;
}

worker::LaunchSpec pooled_spec(registry::Runtime runtime, int memory_mb, const WorkerPaths& paths,
                               const RuntimeOptions& options) {
  worker::LaunchSpec spec;
  spec.function = std::string("pool-") + std::string(registry::runtime_name(runtime));
  spec.argv = runtime_argv(runtime, memory_mb, paths, options);
  spec.env = base_env();
  spec.env.push_back("EMBER_POOLED=1");
  spec.env.push_back("LAMBDA_RUNTIME_DIR=" + paths.runtime_root.string());
  spec.cwd = "/";
  spec.worker.function = spec.function;
  spec.worker.memory_mb = memory_mb;
  spec.worker.pooled = true;
  // Not a fork of the python zygote: loading a function there copies the shared pages it
  // writes (about 45), which makes LOAD to READY 0.4 ms slower than in a python3 of its own,
  // and a waiting worker's start is off the request path anyway.
  return spec;
}

ColdStartFactory::ColdStartFactory(asio::io_context& io, sandbox::Sandbox& sandbox,
                                   const registry::Registry& registry, RuntimeOptions options,
                                   kv::Service* kv)
    : io_(io),
      sandbox_(sandbox),
      registry_(registry),
      options_(std::move(options)),
      kv_(kv),
      bytecode_(io, sandbox) {}

Result<worker::LaunchSpec> ColdStartFactory::function_spec(
    const registry::FunctionRecord& record) const {
  const auto bundle = registry_.bundle_dir(record.active());
  auto spec = launch_spec(record, bundle,
                          WorkerPaths{sandbox_.task_root(bundle.string()), sandbox_.runtime_root()},
                          options_);
  if (!spec) return spec.error();
  if (kv_) spec->kv = kv_handler(io_, *kv_, kv_grants(record.name, record.active().config));
  spec->invoke = invoke_;
  return spec;
}

worker::LaunchSpec ColdStartFactory::pooled(registry::Runtime runtime, int memory_mb) const {
  return pooled_spec(runtime, memory_mb, WorkerPaths{sandbox::kTaskRoot, sandbox_.runtime_root()},
                     options_);
}

Result<std::shared_ptr<Instance>> ColdStartFactory::start(const registry::FunctionRecord& record,
                                                          worker::LogSink log) {
  auto spec = function_spec(record);
  if (!spec) return spec.error();
  if (record.active().config.runtime == registry::Runtime::kPython) compile_bytecode(*spec);
  auto worker = worker::Instance::launch(io_, sandbox_, std::move(*spec), std::move(log));
  if (!worker) return worker.error();
  // A `provided` worker is the bundle's own bootstrap behind ember-runtime-api: it is given
  // calls once it is ready, as before.
  const bool shim = record.active().config.runtime != registry::Runtime::kProvided;
  return std::shared_ptr<Instance>(std::make_shared<ProcessInstance>(std::move(*worker), shim));
}

void ColdStartFactory::forget(const std::string& function) { sandbox_.forget(function); }

void ColdStartFactory::prepare(const registry::FunctionRecord& record) {
  if (record.active().config.runtime != registry::Runtime::kPython) return;
  if (auto spec = function_spec(record)) compile_bytecode(*spec, std::chrono::milliseconds(0));
}

void ColdStartFactory::compile_bytecode(const worker::LaunchSpec& spec,
                                        std::chrono::milliseconds delay) {
  // Asked first so that a start builds the command line only for a bundle not yet asked for
  // (compile() would drop it then).
  if (bytecode_.asked(spec.worker.bundle_dir)) return;
  // The shim's own interpreter, so that the .pyc files carry the tag and magic it reads.
  bytecode_.compile(
      spec,
      {options_.python_path, "-I", "-S", sandbox_.runtime_root() + "/python/compile.py", spec.cwd},
      delay);
}

}  // namespace ember::runtime
