#include "ember/registry/manifest.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <array>
#include <charconv>

#include "ember/common/json_fields.h"
#include "ember/registry/schedule.h"
#include "path_parts.h"

namespace ember::registry {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxEnvBytes = 4096;  // same budget as Lambda

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_ident_char(char c) { return is_ident_start(c) || (c >= '0' && c <= '9'); }

// A printable, bounded rendering of untrusted input for error messages.
std::string printable(std::string_view s) {
  json j = std::string(s.substr(0, 80));
  return j.dump(-1, ' ', true, json::error_handler_t::replace);
}

bool valid_identifier(std::string_view s, bool allow_dollar) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (i == 0 ? is_ident_start(c) : is_ident_char(c)) || (allow_dollar && c == '$');
    if (!ok) return false;
  }
  return true;
}

// A relative path inside the bundle: no empty, "." or ".." components, no leading slash.
bool valid_relative_path(std::string_view s) {
  if (s.empty()) return false;
  for (std::string_view part : path_parts(s)) {
    if (part.empty() || part == "." || part == "..") return false;
    for (char c : part) {
      if (!(is_ident_char(c) || c == '-' || c == '.')) return false;
    }
  }
  return true;
}

Status check_handler_syntax(const FunctionConfig& c) {
  const std::string& h = c.handler;
  auto bad = [&](std::string_view expected) {
    return Error::invalid(fmt::format("handler: {} is not a valid {} handler, expected {}",
                                      printable(h), runtime_name(c.runtime), expected),
                          "handler");
  };
  switch (c.runtime) {
    case Runtime::kNode:
    case Runtime::kPython: {
      // "path/file.name": a relative path, a dot, an identifier (JavaScript allows '$').
      const bool node = c.runtime == Runtime::kNode;
      size_t dot = h.rfind('.');
      if (dot == std::string::npos || !valid_relative_path(h.substr(0, dot)) ||
          !valid_identifier(h.substr(dot + 1), /*allow_dollar=*/node)) {
        return bad(node ? "\"file.export\" such as \"index.handler\""
                        : "\"module.function\" such as \"main.handler\"");
      }
      return {};
    }
    case Runtime::kProvided:
      // Passed to the custom runtime as _HANDLER; its meaning is the runtime's own.
      if (h.empty() || h.size() > 128) return bad("a string of 1 to 128 bytes");
      for (char c : h) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return bad("printable text");
      }
      return {};
  }
  return {};
}

Status check_env(const std::map<std::string, std::string>& env) {
  static constexpr std::array<std::string_view, 4> kReservedPrefixes = {"EMBER_", "AWS_LAMBDA_",
                                                                        "LAMBDA_", "_HANDLER"};
  size_t total = 0;
  for (const auto& [key, value] : env) {
    std::string field = "env." + key;
    if (!valid_identifier(key, false) || key.size() > 128) {
      return Error::invalid(
          fmt::format("env: {} is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*, at most "
                      "128 bytes)",
                      printable(key)),
          "env");
    }
    for (auto prefix : kReservedPrefixes) {
      if (key.starts_with(prefix)) {
        return Error::invalid(fmt::format("{}: names starting with {} are reserved", field, prefix),
                              field);
      }
    }
    if (value.find('\0') != std::string::npos) {
      return Error::invalid(fmt::format("{}: must not contain NUL bytes", field), field);
    }
    total += key.size() + value.size() + 2;
  }
  if (total > kMaxEnvBytes) {
    return Error::invalid(
        fmt::format("env: total size {} bytes is over the limit of {} bytes", total, kMaxEnvBytes),
        "env");
  }
  return {};
}

// Reads every field of `doc` into `c`, starting from what `c` already holds.
Status read_fields(const json& doc, FunctionConfig& c) {
  JsonFields f(doc, "");
  std::string runtime(runtime_name(c.runtime));
  f.one_of("runtime", runtime, {"node", "python", "provided"});
  f.string("handler", c.handler, 256);
  f.integer("memory_mb", c.memory_mb, 64, 10240);
  f.integer("timeout_ms", c.timeout_ms, 10, 900000);
  f.integer("max_instances", c.max_instances, 1, 1000);
  f.integer("min_instances", c.min_instances, 0, 1000);
  f.integer("idle_timeout_s", c.idle_timeout_s, 1, 86400);
  f.one_of("keep_alive", c.keep_alive, {"fixed", "hybrid"});
  f.integer("concurrency", c.concurrency, 1, 1000);
  f.integer("tmp_mb", c.tmp_mb, 1, 10240);
  f.string_map("env", c.env);
  f.one_of("network", c.network, {"none", "host"});
  f.one_of("auth", c.auth, {"none", "token"});
  const json* kv = f.object("kv");
  const json* async = f.object("async");
  const json* schedule = f.array("schedule");
  const json* calls = f.array("calls");
  if (auto st = f.finish(); !st) return st;
  if (calls) {
    constexpr size_t kMaxCalls = 64;
    if (calls->size() > kMaxCalls) {
      return Error::invalid(fmt::format("calls: at most {} functions", kMaxCalls), "calls");
    }
    c.calls.clear();
    for (const auto& item : *calls) {
      if (!item.is_string() ||
          (item.get<std::string>() != "*" && !validate_name(item.get<std::string>()))) {
        return Error::invalid(
            "calls: a list of function names ([a-z0-9][a-z0-9-]{0,62}), or \"*\" for every "
            "function",
            "calls");
      }
      c.calls.push_back(item.get<std::string>());
    }
  }
  if (schedule) {
    constexpr size_t kMaxSchedules = 10;
    if (schedule->size() > kMaxSchedules) {
      return Error::invalid(fmt::format("schedule: at most {} expressions", kMaxSchedules),
                            "schedule");
    }
    c.schedule.clear();
    for (const auto& item : *schedule) {
      if (!item.is_string() || item.get<std::string>().size() > 256) {
        return Error::invalid("schedule: a list of rate(...) or cron(...) expressions", "schedule");
      }
      if (auto parsed = Schedule::parse(item.get<std::string>()); !parsed) {
        return parsed.error();
      }
      c.schedule.push_back(item.get<std::string>());
    }
  }
  if (async) {
    JsonFields a(*async, "async");
    a.integer("retries", c.async_retries, 0, 10);
    a.integer("max_age_s", c.async_max_age_s, 60, 21600);
    a.string("on_failure", c.async_on_failure, 80);
    if (auto st = a.finish(); !st) return st;
    const std::string_view target = c.async_on_failure;
    if (target != "dlq" &&
        !(target.starts_with("function:") && validate_name(target.substr(9)).ok())) {
      return Error::invalid(
          fmt::format("async.on_failure: must be \"dlq\" or \"function:NAME\", got {}",
                      printable(c.async_on_failure)),
          "async.on_failure");
    }
  }
  if (kv) {
    JsonFields k(*kv, "kv");
    k.string_map("shared", c.kv_shared);
    if (auto st = k.finish(); !st) return st;
    for (const auto& [ns, access] : c.kv_shared) {
      const std::string field = "kv.shared." + ns;
      if (!validate_name(ns)) {
        return Error::invalid(
            fmt::format("{}: a namespace is a function's name, [a-z0-9][a-z0-9-]{{0,62}}",
                        printable(field)),
            field);
      }
      if (access != "r" && access != "rw") {
        return Error::invalid(
            fmt::format("{}: must be \"r\" (read) or \"rw\" (read and write), got {}", field,
                        printable(access)),
            field);
      }
    }
  }
  c.runtime = runtime == "python"     ? Runtime::kPython
              : runtime == "provided" ? Runtime::kProvided
                                      : Runtime::kNode;
  return {};
}

Status check_config(const FunctionConfig& c) {
  if (c.handler.empty()) {
    return Error::invalid(
        "handler: missing; set it in function.json or as ?handler= (for example index.handler)",
        "handler");
  }
  if (auto st = check_handler_syntax(c); !st) return st;
  if (c.min_instances > c.max_instances) {
    return Error::invalid(fmt::format("min_instances: {} is above max_instances {}",
                                      c.min_instances, c.max_instances),
                          "min_instances");
  }
  if (c.concurrency > 1 && c.runtime != Runtime::kNode) {
    return Error::invalid(
        fmt::format("concurrency: runtime {} runs one call per instance; only node accepts more",
                    runtime_name(c.runtime)),
        "concurrency");
  }
  return check_env(c.env);
}

bool is_file(const fs::path& p, bool executable = false) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  return !executable || (st.st_mode & 0111) != 0;
}

}  // namespace

Status validate_name(std::string_view name) {
  bool ok = !name.empty() && name.size() <= 63 && is_lower_alnum(name.front());
  for (char c : name) ok = ok && (is_lower_alnum(c) || c == '-');
  if (ok) return {};
  return Error::invalid(
      fmt::format("function name {} must match [a-z0-9][a-z0-9-]{{0,62}}", printable(name)),
      "name");
}

std::string_view runtime_name(Runtime runtime) {
  switch (runtime) {
    case Runtime::kNode:
      return "node";
    case Runtime::kPython:
      return "python";
    case Runtime::kProvided:
      return "provided";
  }
  return "node";
}

json FunctionConfig::to_json() const {
  return json{{"runtime", runtime_name(runtime)},
              {"handler", handler},
              {"memory_mb", memory_mb},
              {"timeout_ms", timeout_ms},
              {"max_instances", max_instances},
              {"min_instances", min_instances},
              {"idle_timeout_s", idle_timeout_s},
              {"keep_alive", keep_alive},
              {"concurrency", concurrency},
              {"tmp_mb", tmp_mb},
              {"env", env},
              {"network", network},
              {"auth", auth},
              {"kv", {{"shared", kv_shared}}},
              {"async",
               {{"retries", async_retries},
                {"max_age_s", async_max_age_s},
                {"on_failure", async_on_failure}}},
              {"schedule", schedule},
              {"calls", calls}};
}

Result<FunctionConfig> parse_config(const json& manifest, const json& overrides) {
  FunctionConfig c;
  bool runtime_given = (manifest.is_object() && manifest.contains("runtime")) ||
                       (overrides.is_object() && overrides.contains("runtime"));
  if (auto st = read_fields(manifest, c); !st) return std::move(st).error();
  if (auto st = read_fields(overrides, c); !st) return std::move(st).error();
  if (!runtime_given) {
    return Error::invalid(
        "runtime: missing; set it in function.json or as ?runtime= (node, python or provided)",
        "runtime");
  }
  if (c.runtime == Runtime::kProvided && c.handler.empty()) c.handler = "bootstrap";
  if (auto st = check_config(c); !st) return std::move(st).error();
  return c;
}

Result<FunctionConfig> patch_config(const FunctionConfig& base, const json& patch) {
  FunctionConfig c = base;
  if (auto st = read_fields(patch, c); !st) return std::move(st).error();
  if (auto st = check_config(c); !st) return std::move(st).error();
  return c;
}

Result<json> overrides_from_query(const std::vector<std::pair<std::string, std::string>>& params) {
  static constexpr std::array<std::string_view, 7> kIntegers = {
      "memory_mb",      "timeout_ms",  "max_instances", "min_instances",
      "idle_timeout_s", "concurrency", "tmp_mb"};
  static constexpr std::array<std::string_view, 4> kStrings = {"runtime", "handler", "network",
                                                               "auth"};
  json out = json::object();
  for (const auto& [key, value] : params) {
    if (out.contains(key)) {
      return Error::invalid(fmt::format("query parameter {} is given twice", printable(key)), key);
    }
    if (std::find(kStrings.begin(), kStrings.end(), key) != kStrings.end()) {
      out[key] = value;
    } else if (std::find(kIntegers.begin(), kIntegers.end(), key) != kIntegers.end()) {
      int64_t v = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (ec != std::errc() || end != value.data() + value.size()) {
        return Error::invalid(fmt::format("{}: must be an integer, got {}", key, printable(value)),
                              key);
      }
      out[key] = v;
    } else {
      return Error::invalid(fmt::format("unknown query parameter {}", printable(key)), key);
    }
  }
  return out;
}

Status check_handler(const FunctionConfig& c, const fs::path& root) {
  switch (c.runtime) {
    case Runtime::kNode: {
      std::string file = c.handler.substr(0, c.handler.rfind('.'));
      for (const char* ext : {".js", ".mjs", ".cjs"}) {
        if (is_file(root / (file + ext))) return {};
      }
      return Error::invalid(fmt::format("handler: {} needs {}.js, {}.mjs or {}.cjs in the bundle",
                                        printable(c.handler), file, file, file),
                            "handler");
    }
    case Runtime::kPython: {
      std::string module = c.handler.substr(0, c.handler.rfind('.'));
      std::replace(module.begin(), module.end(), '.', '/');
      if (is_file(root / (module + ".py")) || is_file(root / module / "__init__.py")) return {};
      return Error::invalid(
          fmt::format("handler: {} needs {}.py in the bundle", printable(c.handler), module),
          "handler");
    }
    case Runtime::kProvided:
      if (is_file(root / "bootstrap", /*executable=*/true)) return {};
      return Error::invalid(
          "runtime provided needs an executable file named bootstrap at the bundle root",
          "handler");
  }
  return {};
}

}  // namespace ember::registry
