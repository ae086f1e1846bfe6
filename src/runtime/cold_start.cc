#include "ember/runtime/cold_start.h"

#include <algorithm>

#include "ember/runtime/kv_bridge.h"

namespace ember::runtime {

namespace asio = boost::asio;

namespace {

// The region functions are told they run in: Ember has one, and Lambda's runtimes and SDKs
// need a name for it.
constexpr const char* kRegion = "us-east-1";

// A worker process as the scheduler sees it: the runtime's interface over worker::Instance.
class ProcessInstance final : public Instance {
 public:
  explicit ProcessInstance(std::shared_ptr<worker::Instance> worker) : worker_(std::move(worker)) {}
  ~ProcessInstance() override { worker_->on_exit(nullptr); }

  asio::awaitable<Status> ready(std::chrono::milliseconds timeout) override {
    return worker_->ready(timeout);
  }
  asio::awaitable<worker::CallResult> call(const std::string& request_id,
                                           const std::string& event_json, worker::CallTags tags,
                                           std::chrono::nanoseconds timeout,
                                           int64_t deadline_wall_ms) override {
    return worker_->call(request_id, event_json, tags, timeout, deadline_wall_ms);
  }
  void stop(std::chrono::milliseconds grace) override { worker_->stop(grace); }
  void kill(std::string reason) override { worker_->kill(std::move(reason)); }
  bool usable() const override { return worker_->usable(); }
  std::optional<Clock::time_point> running_since() const override {
    return worker_->running_since();
  }
  std::chrono::nanoseconds init_duration() const override { return worker_->init_duration(); }
  const std::string& exit_reason() const override { return worker_->exit_reason(); }
  worker::ExitCause exit_cause() const override { return worker_->exit_cause(); }
  const os::CgroupEvents& events() const override { return worker_->events(); }
  uint64_t memory_peak() const override { return worker_->memory_peak(); }
  void on_exit(std::function<void()> callback) override {
    worker_->on_exit([callback = std::move(callback)](worker::Instance&) {
      if (callback) callback();
    });
  }

 private:
  std::shared_ptr<worker::Instance> worker_;
};

}  // namespace

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
  // Built from scratch: nothing of the daemon's own environment reaches a function.
  spec.env = {"PATH=/usr/local/bin:/usr/bin:/bin",
              "LANG=C.UTF-8",
              "TZ=UTC",
              "HOME=/tmp",
              "_HANDLER=" + c.handler,
              "LAMBDA_TASK_ROOT=" + paths.task_root,
              "EMBER_FUNCTION_NAME=" + record.name,
              "EMBER_FUNCTION_VERSION=" + std::to_string(v.number),
              "EMBER_MEMORY_MB=" + std::to_string(c.memory_mb),
              "EMBER_CONCURRENCY=" + std::to_string(c.concurrency)};
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
  switch (c.runtime) {
    case registry::Runtime::kNode:
      spec.argv = {options.node_path,
                   "--max-old-space-size=" + std::to_string(std::max(16, c.memory_mb * 3 / 4)),
                   (paths.runtime_root / "node" / "bootstrap.js").string()};
      break;
    case registry::Runtime::kPython:
      spec.argv = {options.python_path, "-I", "-S", "-u",
                   (paths.runtime_root / "python" / "bootstrap.py").string()};
      break;
    case registry::Runtime::kProvided:
      // The bundle's bootstrap, started by the Runtime API shim (docs/lambda.md).
      spec.argv = {(paths.runtime_root / "provided" / "ember-runtime-api").string()};
      spec.concurrency = 1;
      break;
  }
  return spec;
}

ColdStartFactory::ColdStartFactory(asio::io_context& io, sandbox::Sandbox& sandbox,
                                   const registry::Registry& registry, RuntimeOptions options,
                                   kv::Service* kv)
    : io_(io), sandbox_(sandbox), registry_(registry), options_(std::move(options)), kv_(kv) {}

Result<std::shared_ptr<Instance>> ColdStartFactory::start(const registry::FunctionRecord& record,
                                                          worker::LogSink log) {
  const auto bundle = registry_.bundle_dir(record.active());
  auto spec = launch_spec(record, bundle,
                          WorkerPaths{sandbox_.task_root(bundle.string()), sandbox_.runtime_root()},
                          options_);
  if (!spec) return spec.error();
  if (kv_) spec->kv = kv_handler(io_, *kv_, kv_grants(record.name, record.active().config));
  spec->invoke = invoke_;
  auto worker = worker::Instance::launch(io_, sandbox_, std::move(*spec), std::move(log));
  if (!worker) return worker.error();
  return std::shared_ptr<Instance>(std::make_shared<ProcessInstance>(std::move(*worker)));
}

void ColdStartFactory::forget(const std::string& function) { sandbox_.forget(function); }

}  // namespace ember::runtime
