// The daemon's configuration: defaults, then the JSON config file, then the environment, then
// command-line flags. Everything is validated before any of it is used.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ember/common/result.h"
#include "ember/events/dispatcher.h"
#include "ember/gateway/server.h"
#include "ember/kv/service.h"
#include "ember/metering/usage.h"
#include "ember/registry/bundle.h"
#include "ember/runtime/cold_start.h"
#include "ember/runtime/pool.h"
#include "ember/sandbox/sandbox.h"
#include "ember/scheduler/scheduler.h"

namespace ember::config {

struct ListenAddress {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
};

// Parses "HOST:PORT" or "[V6]:PORT".
Result<ListenAddress> parse_listen(std::string_view text);

struct MeteringConfig {
  std::chrono::milliseconds flush_interval{1000};  // the most records a crash can lose
  int retention_days = 400;                        // 0: keep every record
  metering::Prices prices;
};

// Where the registry, the KV store and the event queue keep their state (docs/scale-out.md):
// "sqlite", the state directory of this node alone; or "postgres", a PostgreSQL database
// several nodes share.
struct StorageConfig {
  std::string backend = "sqlite";
  std::string postgres;  // libpq connection string; required for "postgres"
  std::string node;      // this node's name among the nodes; empty: <hostname>-<random>
  // A node silent this long is taken for dead and its queued events go to the others.
  std::chrono::milliseconds lease{10'000};
};

// The key-value store (docs/kv.md). "sqlite" is the embedded backend, in <state_dir>/kv.db;
// "postgres" follows the storage section.
struct KvConfig {
  std::string backend = "sqlite";
  kv::Limits limits;
  kv::ServiceOptions service;
};

struct Config {
  ListenAddress listen;
  std::filesystem::path socket;  // empty: no Unix socket listener
  std::filesystem::path state_dir;
  std::string admin_token;  // empty: read or create <state_dir>/admin.token
  std::filesystem::path deploy_dir;
  std::string log_level = "info";
  gateway::ServerOptions http;
  registry::BundleLimits bundles;
  int max_versions = 10;
  scheduler::SchedulerOptions scheduler;
  // runtimes_dir, node_path and python_path; an empty runtimes_dir means "next to the binary
  // when installed, else the source tree's runtimes/".
  runtime::RuntimeOptions runtime;
  // Pre-initialised workers (docs/sandbox.md#pre-initialised-workers); max_per_flavour 0: off.
  runtime::PoolOptions pool;
  int64_t log_bytes_per_function = 1 << 20;
  // The "sandbox" section and --insecure; runtimes and interpreters are filled in at start.
  sandbox::SandboxOptions sandbox;
  MeteringConfig metering;
  StorageConfig storage;
  KvConfig kv;
  // Asynchronous invocations (docs/events.md): queue limits, attempts at once, retry timing.
  events::DispatcherOptions events;
};

// The settings that differ between `before` and `after` and only take effect at a restart
// (listen address, socket, state directory, sandbox, ...), by their config file names.
std::vector<std::string> restart_needed(const Config& before, const Config& after);

struct CommandLine {
  std::optional<std::filesystem::path> config_file;
  std::optional<std::string> listen;
  std::optional<std::string> socket;
  std::optional<std::string> state_dir;
  std::optional<std::string> admin_token;
  std::optional<std::string> deploy_dir;
  std::optional<std::string> log_level;
  bool check_config = false;
  bool insecure = false;
  bool help = false;
  bool version = false;
};

Result<CommandLine> parse_command_line(const std::vector<std::string>& args);
std::string usage();

// Reads a config document into `config`; unknown keys and out-of-range values are errors that
// carry the JSON path of the field.
Status apply_config_json(std::string_view text, Config& config);

// Defaults (which depend on whether the daemon runs as root), the config file if one is given,
// EMBER_ADMIN_TOKEN from `env_token`, then the flags.
Result<Config> load(const CommandLine& cl, std::optional<std::string> env_token, bool is_root);

}  // namespace ember::config
