// emberd: wires the modules together. Policy lives in the modules; this file only decides
// what is built, in which order, and what happens on signals.
#include <fmt/format.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <csignal>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <thread>

#include "ember/common/async.h"
#include "ember/common/crypto.h"
#include "ember/common/log.h"
#include "ember/config/config.h"
#include "ember/events/dispatcher.h"
#include "ember/events/store.h"
#include "ember/events/timetable.h"
#include "ember/gateway/api.h"
#include "ember/gateway/auth.h"
#include "ember/gateway/server.h"
#include "ember/kv/service.h"
#include "ember/logs/store.h"
#include "ember/metering/metrics.h"
#include "ember/metering/usage.h"
#include "ember/os/systemd.h"
#include "ember/registry/registry.h"
#include "ember/runtime/cold_start.h"
#include "ember/runtime/pool.h"
#include "ember/sandbox/sandbox.h"
#include "ember/scheduler/scheduler.h"

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace ember;

namespace {

// Deploys each folder of `dir` that holds a function.json; a folder whose packed content and
// manifest are unchanged keeps its current version.
// This node's name among the nodes sharing a store: the configured one, else the host's name
// with a random suffix (a restart is a new node, whose predecessor's events are taken over
// once its lease runs out).
std::string node_name(const config::StorageConfig& storage) {
  if (!storage.node.empty()) return storage.node;
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "node");
  return std::string(host) + "-" + random_uuid().substr(0, 8);
}

void deploy_folders(registry::Registry& registry, const fs::path& dir) {
  std::error_code ec;
  std::vector<fs::path> folders;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_directory() && fs::exists(e.path() / "function.json")) folders.push_back(e.path());
  }
  if (ec) {
    spdlog::error("deploy: cannot read {}: {}", dir.string(), ec.message());
    return;
  }
  std::sort(folders.begin(), folders.end());
  for (const auto& folder : folders) {
    std::string name = folder.filename().string();
    auto change = registry.deploy_directory(name, folder);
    if (!change) {
      spdlog::error("deploy: [fn={}] {}: {}", name, folder.string(), change.error().message);
    } else if (change->changed) {
      spdlog::info("deploy: [fn={}] version {} from {}", name, change->record->active_version,
                   folder.string());
    } else {
      spdlog::info("deploy: [fn={}] unchanged, version {}", name, change->record->active_version);
    }
  }
}

// SIGHUP too: its default action ends the process, so one that arrives during start-up must
// wait for the handler rather than kill the daemon.
sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  return set;
}

void block_stop_signals() {
  sigset_t set = stop_signals();
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
}

void unblock_stop_signals() {
  sigset_t set = stop_signals();
  ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
}

// Where the runtime shims are: the configured folder, else share/ember/runtimes beside an
// installed binary, else the source tree this binary was built from.
fs::path find_runtimes(const fs::path& configured) {
  if (!configured.empty()) return configured;
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  fs::path installed = exe.parent_path().parent_path() / "share" / "ember" / "runtimes";
  if (!ec && fs::exists(installed / "node" / "bootstrap.js", ec)) return installed;
  return EMBER_SOURCE_RUNTIMES;
}

// 75% of the machine's memory when no budget is configured.
int64_t default_memory_budget_mb() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page / (1 << 20) * 3 / 4 : 0;
}

// The pool's memory is at most a tenth of the budget, whatever the configuration says.
runtime::PoolOptions pool_options(runtime::PoolOptions options, int64_t budget_mb) {
  if (budget_mb > 0) {
    options.max_memory_mb =
        static_cast<int>(std::min<int64_t>(options.max_memory_mb, budget_mb / 10));
  }
  return options;
}

// The CPUs this process may run on (its affinity mask, which cpusets and taskset narrow).
int cpu_count() {
  cpu_set_t set;
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// A plain function rather than a lambda: a coroutine lambda's captures die with the closure,
// which the signal handler destroys long before the drain ends.
asio::awaitable<void> drain_and_stop(gateway::HttpServer& server, events::Timetable& timetable,
                                     events::Dispatcher& dispatcher,
                                     scheduler::Scheduler& scheduler,
                                     runtime::PooledFactory& pool) {
  timetable.stop();
  pool.stop();
  co_await server.drain();
  // Events whose attempt is cut short stay stored as running and run again at the next start.
  co_await dispatcher.stop(std::chrono::milliseconds(2000));
  co_await scheduler.shutdown();
}

// Sends the service manager a line of live counts now and every few seconds, and watchdog
// keep-alives from the event loop, so a stuck loop stops them.
asio::awaitable<void> report_to_service_manager(const os::ServiceNotifier& notifier,
                                                const registry::Registry& registry,
                                                const scheduler::Scheduler& scheduler,
                                                const gateway::HttpServer& server) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  const auto watchdog = notifier.watchdog_interval();
  const auto status_every = std::chrono::seconds(5);
  auto next_status = std::chrono::steady_clock::now();
  while (!server.draining()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_status) {
      notifier.status(fmt::format("{} functions, {} instances, {} connections",
                                  registry.list().size(), scheduler.live_instances(),
                                  server.connection_count()));
      next_status = now + status_every;
    }
    if (watchdog) notifier.watchdog();
    auto wait = std::chrono::duration_cast<std::chrono::steady_clock::duration>(status_every);
    if (watchdog) wait = std::min<std::chrono::steady_clock::duration>(wait, *watchdog);
    timer.expires_after(wait);
    co_await timer.async_wait(asio::use_awaitable);
  }
}

// What SIGHUP changes without a restart: the log level, the admin token, the scheduler's limits
// and interpreters, and prices. A bad file changes nothing.
struct Reloader {
  const config::CommandLine& cl;
  config::Config current;
  scheduler::Scheduler& scheduler;
  runtime::ColdStartFactory& factory;
  runtime::PooledFactory& pool;
  gateway::Api& api;
  events::Dispatcher& dispatcher;
  std::string file_token;  // the token read from the state directory, when none is configured

  void reload() {
    const char* env_token = std::getenv("EMBER_ADMIN_TOKEN");
    auto next = config::load(cl, env_token ? std::optional<std::string>(env_token) : std::nullopt,
                             ::geteuid() == 0);
    if (!next) {
      spdlog::error("reload: keeping the current configuration: {}", next.error().message);
      return;
    }
    for (const auto& key : config::restart_needed(current, *next)) {
      spdlog::warn("reload: {} changed; it takes effect at the next restart", key);
    }
    init_logging(*parse_log_level(next->log_level));
    scheduler::SchedulerOptions options = next->scheduler;
    if (options.memory_budget_mb == 0) options.memory_budget_mb = default_memory_budget_mb();
    if (options.eager_instances == 0) options.eager_instances = cpu_count();
    runtime::RuntimeOptions interpreters = next->runtime;
    interpreters.runtimes_dir = find_runtimes(current.runtime.runtimes_dir);
    const bool new_interpreters = next->runtime.node_path != current.runtime.node_path ||
                                  next->runtime.python_path != current.runtime.python_path;
    factory.set_options(std::move(interpreters));
    pool.set_options(pool_options(next->pool, options.memory_budget_mb));
    // Waiting workers run the interpreters they were started with.
    if (new_interpreters) pool.flush();
    scheduler.set_options(std::move(options));
    api.set_admin_token(next->admin_token.empty() ? file_token : next->admin_token);
    api.set_prices(next->metering.prices);
    dispatcher.set_options(next->events);
    // Settings that need a restart keep their running values.
    config::Config kept = *next;
    kept.listen = current.listen;
    kept.socket = current.socket;
    kept.state_dir = current.state_dir;
    current = std::move(kept);
    spdlog::info("reload: configuration reloaded{}",
                 cl.config_file ? " from " + cl.config_file->string() : "");
  }
};

int run(const config::CommandLine& cl, const config::Config& cfg, sandbox::Sandbox& sandbox) {
  // Extracted bundles must stay readable by the per-function users of the sandbox; private
  // state sets its own modes explicitly.
  ::umask(022);
  std::signal(SIGPIPE, SIG_IGN);

  // Several nodes (docs/scale-out.md): the registry, the KV store and the event queue live in
  // PostgreSQL; the state directory keeps this node's copies of bundles, logs and usage.
  const bool shared = cfg.storage.backend == "postgres";
  const std::string node = shared ? node_name(cfg.storage) : std::string();
  registry::RegistryOptions registry_options{cfg.state_dir, cfg.bundles, cfg.max_versions,
                                             &system_clock()};
  if (shared) {
    auto store = registry::open_postgres_store(cfg.storage.postgres);
    if (!store) {
      spdlog::critical("storage: {}", store.error().message);
      return 1;
    }
    registry_options.shared = std::move(*store);
    spdlog::info("storage: PostgreSQL, shared with the other nodes; this node is {}", node);
  }
  auto registry = registry::Registry::open(std::move(registry_options));
  if (!registry) {
    spdlog::critical("cannot open state directory {}: {}", cfg.state_dir.string(),
                     registry.error().message);
    return 1;
  }
  auto& reg = **registry;

  std::string token = cfg.admin_token;
  if (token.empty()) {
    auto loaded = gateway::load_or_create_admin_token(reg.state_dir());
    if (!loaded) {
      spdlog::critical("admin token: {}", loaded.error().message);
      return 1;
    }
    token = std::move(*loaded);
    spdlog::info("admin token is in {}", (reg.state_dir() / "admin.token").string());
  }

  if (!cfg.deploy_dir.empty()) deploy_folders(reg, cfg.deploy_dir);

  // Usage records outlive the daemon; a crash loses at most one flush interval of them.
  auto usage = metering::UsageStore::open(reg.state_dir() / "usage.db", cfg.metering.flush_interval,
                                          cfg.metering.retention_days);
  if (!usage) {
    spdlog::critical("metering: {}", usage.error().message);
    return 1;
  }
  metering::Metrics metrics;
  const os::ServiceNotifier notifier;

  // Declared before the event loop: instances still held by suspended coroutines log into it
  // until the loop is destroyed.
  logs::LogStore logs(static_cast<size_t>(cfg.log_bytes_per_function));
  asio::io_context io(1);
  // SIGINT, SIGTERM and SIGHUP have been blocked since main() began; from here they are queued for
  // the event loop, so a stop request at any moment of start-up ends in a clean drain.
  asio::signal_set signals(io, SIGINT, SIGTERM);
  asio::signal_set hangup(io, SIGHUP);
  unblock_stop_signals();
  asio::thread_pool blocking(1);

  // After the event loop, so that it is gone (its threads joined) before the loop its replies
  // are posted to.
  auto kv_store =
      shared ? kv::open_postgres(kv::PostgresOptions{cfg.storage.postgres, cfg.kv.limits})
             : kv::open_sqlite(kv::SqliteOptions{reg.state_dir() / "kv.db", cfg.kv.limits});
  if (!kv_store) {
    spdlog::critical("kv: {}", kv_store.error().message);
    return 1;
  }
  kv::Service kv_service(**kv_store, cfg.kv.service);
  kv_service.on_op([&metrics](const kv::OpRecord& op) {
    metrics.kv_operation(op.function, kv::op_name(op.op),
                         op.error_type.empty() ? "ok" : op.error_type,
                         std::chrono::duration<double>(op.duration).count());
  });

  runtime::RuntimeOptions runtime_options = cfg.runtime;
  runtime_options.runtimes_dir = find_runtimes(cfg.runtime.runtimes_dir);
  runtime::ColdStartFactory factory(io, sandbox, reg, runtime_options, &kv_service);
  scheduler::SchedulerOptions sched_options = cfg.scheduler;
  if (sched_options.memory_budget_mb == 0)
    sched_options.memory_budget_mb = default_memory_budget_mb();
  runtime::PooledFactory pool(io, factory, pool_options(cfg.pool, sched_options.memory_budget_mb));
  if (sched_options.eager_instances == 0) sched_options.eager_instances = cpu_count();
  scheduler::Scheduler scheduler(io, pool, reg, logs, sched_options);
  scheduler.start();
  spdlog::info("scheduler: runtimes in {}, memory budget {} MiB, {} eager instances per function",
               runtime_options.runtimes_dir.string(), sched_options.memory_budget_mb,
               sched_options.eager_instances);

  gateway::Api api(gateway::ApiOptions{token, cfg.bundles.max_compressed_bytes,
                                       static_cast<uint64_t>(cfg.http.max_body_bytes),
                                       std::chrono::milliseconds(cfg.http.drain_timeout_ms)},
                   reg, blocking, &scheduler, &logs);
  gateway::HttpServer server(io, cfg.http, api);
  api.set_server(&server);
  api.set_metering(&metrics, usage->get(), cfg.metering.prices);
  api.set_kv(&kv_service);
  api.set_pool(&pool);
  api.set_bytecode(&factory.bytecode());
  auto key_store =
      shared ? gateway::postgres_key_store(cfg.storage.postgres)
             : Result<std::unique_ptr<gateway::KeyStore>>(gateway::file_key_store(reg.state_dir()));
  if (!key_store) {
    spdlog::critical("invoke keys: {}", key_store.error().message);
    return 1;
  }
  auto keys = gateway::InvokeKeys::open(std::move(*key_store));
  if (!keys) {
    spdlog::critical("invoke keys: {}", keys.error().message);
    return 1;
  }
  api.set_keys(keys->get());

  // Asynchronous invocations: resumed before the listeners open, so none waits on a request.
  auto event_store = shared ? events::open_postgres(events::PostgresOptions{
                                  cfg.storage.postgres, node, cfg.storage.lease})
                            : events::open_sqlite(reg.state_dir() / "events.db");
  if (!event_store) {
    spdlog::critical("events: {}", event_store.error().message);
    return 1;
  }
  events::Dispatcher dispatcher(
      io, **event_store, reg,
      [&api](const events::Event& event, scheduler::InvokeRequest request) {
        return api.run_event(event, std::move(request));
      },
      cfg.events);
  if (auto st = dispatcher.start(); !st) {
    spdlog::critical("events: {}", st.error().message);
    return 1;
  }
  events::Timetable timetable(io, **event_store, reg, dispatcher);
  if (auto st = timetable.start(); !st) {
    spdlog::critical("events: {}", st.error().message);
    return 1;
  }
  api.set_events(&dispatcher, event_store->get(), &timetable);
  factory.set_invoke_handler(api.function_calls(io.get_executor()));
  // What the other nodes deploy, change and delete reaches this one's scheduler and timetable.
  if (auto st = reg.follow([&io, &api](const std::string& name, registry::RecordPtr now) {
        asio::post(io, [&api, name, now] { api.changed_elsewhere(name, now); });
      });
      !st) {
    spdlog::critical("storage: {}", st.error().message);
    return 1;
  }
  pool.fill();

  auto endpoint = server.listen_tcp(cfg.listen.host, cfg.listen.port);
  if (!endpoint) {
    spdlog::critical("cannot listen: {}", endpoint.error().message);
    return 1;
  }
  if (!cfg.socket.empty()) {
    if (auto st = server.listen_unix(cfg.socket); !st) {
      spdlog::critical("cannot listen: {}", st.error().message);
      return 1;
    }
  }
  server.start();
  std::string host = endpoint->address().to_string();
  if (endpoint->address().is_v6()) host = "[" + host + "]";
  spdlog::info("listening on http://{}:{}", host, endpoint->port());
  if (!cfg.socket.empty()) spdlog::info("listening on unix:{}", cfg.socket.string());

  // Listening, and every function of the state directory and --deploy is loaded.
  notifier.ready();
  asio::co_spawn(io, report_to_service_manager(notifier, reg, scheduler, server),
                 log_escaped("service manager notifications"));

  Reloader reloader{cl,   cfg, scheduler,  factory,
                    pool, api, dispatcher, cfg.admin_token.empty() ? token : std::string()};
  std::function<void()> on_hangup = [&] {
    hangup.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      notifier.reloading();
      reloader.reload();
      notifier.ready();
      on_hangup();
    });
  };
  on_hangup();

  // The spawner helper is part of the daemon: without it no worker can start, and it is the
  // second line that kills workers should the daemon die. If it dies, every worker is killed
  // and the daemon exits with an error, for the service manager to restart it.
  int exit_code = 0;
  asio::posix::stream_descriptor helper_exit(io, ::dup(sandbox.spawner().helper_pidfd()));
  helper_exit.async_wait(
      asio::posix::stream_descriptor::wait_read, [&](const boost::system::error_code& ec) {
        if (ec) return;
        spdlog::critical("the spawner helper exited: killing every worker and stopping");
        exit_code = 1;
        notifier.stopping();
        hangup.cancel();
        signals.cancel();
        scheduler.kill_all("the spawner helper exited");
        asio::co_spawn(io, drain_and_stop(server, timetable, dispatcher, scheduler, pool),
                       [&, log = log_escaped("drain")](std::exception_ptr e) {
                         log(e);
                         io.stop();
                       });
      });

  signals.async_wait([&](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    notifier.stopping();
    hangup.cancel();
    helper_exit.cancel();
    spdlog::info("signal {}: draining", signo == SIGTERM ? "SIGTERM" : "SIGINT");
    asio::co_spawn(io, drain_and_stop(server, timetable, dispatcher, scheduler, pool),
                   [&, log = log_escaped("drain")](std::exception_ptr e) {
                     log(e);
                     spdlog::info("stopped");
                     io.stop();
                   });
  });

  io.run();
  (void)reg.follow(nullptr);  // no more posts to the loop, which goes first
  blocking.join();
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  block_stop_signals();
  init_logging(spdlog::level::info);
  auto cl = config::parse_command_line(std::vector<std::string>(argv + 1, argv + argc));
  if (!cl) {
    std::cerr << "emberd: " << cl.error().message << "\n";
    return 2;
  }
  if (cl->help) {
    std::cout << config::usage();
    return 0;
  }
  if (cl->version) {
    std::cout << "emberd " << EMBER_VERSION << "\n";
    return 0;
  }
  const char* env_token = std::getenv("EMBER_ADMIN_TOKEN");
  auto cfg = config::load(*cl, env_token ? std::optional<std::string>(env_token) : std::nullopt,
                          ::geteuid() == 0);
  if (!cfg) {
    std::cerr << "emberd: invalid configuration: " << cfg.error().message << "\n";
    return 2;
  }
  if (cl->check_config) {
    std::cout << "configuration is valid\n";
    return 0;
  }
  init_logging(*parse_log_level(cfg->log_level));
  // Connections, worker pipes and one network namespace per function are all descriptors:
  // take the hard limit rather than the soft 1024 a shell hands down. Workers get their own.
  if (rlimit files{}; ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  // First, while this process has a single thread: the sandbox and its spawner helper.
  sandbox::SandboxOptions sandbox_options = cfg->sandbox;
  sandbox_options.runtimes_dir = find_runtimes(cfg->runtime.runtimes_dir);
  sandbox_options.interpreters = {cfg->runtime.node_path, cfg->runtime.python_path};
  sandbox_options.python_path = cfg->runtime.python_path;
  if (const auto zygote = sandbox_options.runtimes_dir / "python" / "ember-python-zygote";
      cfg->runtime.python_zygote && std::filesystem::exists(zygote)) {
    sandbox_options.python_zygote = zygote;
  }
  // One cgroup subtree per state directory: two daemons never touch each other's workers.
  sandbox_options.tag =
      sha256_hex(std::filesystem::weakly_canonical(cfg->state_dir).string()).substr(0, 12);
  auto sandbox = sandbox::Sandbox::create(std::move(sandbox_options));
  if (!sandbox) {
    spdlog::critical("cannot start the sandbox: {}", sandbox.error().message);
    return 1;
  }
  try {
    return run(*cl, *cfg, **sandbox);
  } catch (const std::exception& e) {
    spdlog::critical("fatal: {}", e.what());
    return 1;
  }
}
