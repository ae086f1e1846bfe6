// Function names and the manifest (`function.json`): what a function is configured to be.
#pragma once

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ember/common/result.h"

namespace ember::registry {

// Function names match [a-z0-9][a-z0-9-]{0,62}: safe as a file name, a cgroup name and a DNS
// label, so they are checked on every route before they reach the filesystem.
Status validate_name(std::string_view name);

enum class Runtime { kNode, kPython, kProvided };
std::string_view runtime_name(Runtime runtime);

// The effective configuration of one function version: manifest, then query overrides, with
// every default filled in. Immutable once part of a version.
struct FunctionConfig {
  Runtime runtime = Runtime::kNode;
  std::string handler;
  int memory_mb = 128;
  int timeout_ms = 3000;
  int max_instances = 10;
  int min_instances = 0;
  int idle_timeout_s = 60;
  // How long idle instances are kept: "fixed" (idle_timeout_s), or "hybrid", learned from the
  // function's idle times between calls (docs/api.md, "keep_alive").
  std::string keep_alive = "fixed";
  int concurrency = 1;
  int tmp_mb = 64;
  std::map<std::string, std::string> env;
  std::string network = "none";  // "none": own network namespace with loopback only; "host"
  std::string auth = "none";     // "none": invoke is open; "token": needs a key or admin token
  // Other functions' key-value namespaces this one may use: name → "r" or "rw". Its own
  // namespace (its name) it always may.
  std::map<std::string, std::string> kv_shared;
  // Asynchronous invocations (docs/events.md): attempts after the first, the oldest an event may
  // grow before it stops being tried, and where an event goes when every attempt failed: "dlq"
  // (the function's dead-letter list) or "function:NAME".
  int async_retries = 2;
  int async_max_age_s = 21600;
  std::string async_on_failure = "dlq";
  // Schedules that send the function events (docs/events.md#schedules): EventBridge rate() and
  // cron() expressions, UTC.
  std::vector<std::string> schedule;
  // The functions this one may call with context.invoke (docs/events.md#function-to-function):
  // names, or "*" for every function.
  std::vector<std::string> calls;

  bool operator==(const FunctionConfig&) const = default;
  nlohmann::json to_json() const;
};

// Builds a configuration from a manifest document (the parsed function.json, or an empty
// object) with `overrides` applied on top. Every field is checked; errors name the field.
Result<FunctionConfig> parse_config(const nlohmann::json& manifest,
                                    const nlohmann::json& overrides = nlohmann::json::object());

// Applies a PATCH body (a JSON object with any subset of the fields) to `base`.
Result<FunctionConfig> patch_config(const FunctionConfig& base, const nlohmann::json& patch);

// Turns deploy query parameters (`?runtime=node&memory_mb=256`) into a JSON object typed like
// the manifest, so they are validated by the same code. Unknown parameters are errors.
Result<nlohmann::json> overrides_from_query(
    const std::vector<std::pair<std::string, std::string>>& params);

// Checks that the handler names something that exists in the extracted bundle, so a typo is a
// 400 at deploy time rather than a failure at the first invocation.
Status check_handler(const FunctionConfig& config, const std::filesystem::path& bundle_root);

}  // namespace ember::registry
