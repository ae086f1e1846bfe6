#include "ember/config/config.h"

#include <fmt/format.h>

#include <charconv>

#include "ember/common/json_fields.h"
#include "ember/common/log.h"
#include "ember/os/fs.h"

namespace ember::config {

using nlohmann::json;

Result<ListenAddress> parse_listen(std::string_view text) {
  auto bad = [&] {
    return Error::invalid(
        fmt::format("listen address \"{}\" must be HOST:PORT, such as 127.0.0.1:8080", text),
        "listen");
  };
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return bad();
  std::string_view host = text.substr(0, colon);
  std::string_view port = text.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return bad();
    host = host.substr(1, host.size() - 2);
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535) {
    return bad();
  }
  return ListenAddress{std::string(host), static_cast<uint16_t>(value)};
}

Status apply_config_json(std::string_view text, Config& c) {
  auto doc = parse_json(text, "config file");
  if (!doc) return std::move(doc).error();
  JsonFields f(*doc, "");
  std::string listen, socket, state_dir, deploy_dir;
  f.string("listen", listen, 300);
  f.string("socket", socket, 107);  // sun_path holds 108 bytes with the NUL
  f.string("state_dir", state_dir);
  f.string("admin_token", c.admin_token, 512);
  f.string("deploy_dir", deploy_dir);
  f.one_of("log_level", c.log_level, {"trace", "debug", "info", "warn", "error", "off"});
  if (const json* http = f.object("http")) {
    JsonFields h(*http, "http");
    auto& o = c.http;
    h.integer("max_connections", o.max_connections, 1, 1'000'000);
    h.integer("max_header_bytes", o.max_header_bytes, 1024, 1 << 20);
    h.integer("max_body_bytes", o.max_body_bytes, 1024, int64_t{1} << 30);
    h.integer("header_timeout_ms", o.header_timeout_ms, 100, 3'600'000);
    h.integer("body_timeout_ms", o.body_timeout_ms, 100, 3'600'000);
    h.integer("keepalive_timeout_ms", o.keepalive_timeout_ms, 100, 3'600'000);
    h.integer("write_timeout_ms", o.write_timeout_ms, 100, 3'600'000);
    h.integer("drain_timeout_ms", o.drain_timeout_ms, 0, 3'600'000);
    if (auto st = h.finish(); !st) return st;
  }
  if (const json* b = f.object("bundles")) {
    JsonFields h(*b, "bundles");
    auto& o = c.bundles;
    int64_t compressed = static_cast<int64_t>(o.max_compressed_bytes);
    int64_t extracted = static_cast<int64_t>(o.max_extracted_bytes);
    int64_t entries = static_cast<int64_t>(o.max_entries);
    int64_t ratio = static_cast<int64_t>(o.max_ratio);
    h.integer("max_compressed_bytes", compressed, 1024, int64_t{1} << 32);
    h.integer("max_extracted_bytes", extracted, 1024, int64_t{1} << 36);
    h.integer("max_entries", entries, 1, 10'000'000);
    h.integer("max_ratio", ratio, 2, 100'000);
    h.integer("max_versions", c.max_versions, 1, 1000);
    if (auto st = h.finish(); !st) return st;
    o.max_compressed_bytes = static_cast<uint64_t>(compressed);
    o.max_extracted_bytes = static_cast<uint64_t>(extracted);
    o.max_entries = static_cast<uint64_t>(entries);
    o.max_ratio = static_cast<uint64_t>(ratio);
  }
  std::string runtimes_dir;
  f.string("runtimes_dir", runtimes_dir);
  f.string("node_path", c.runtime.node_path);
  f.string("python_path", c.runtime.python_path);
  f.boolean("python_zygote", c.runtime.python_zygote);
  if (const json* sch = f.object("scheduler")) {
    JsonFields h(*sch, "scheduler");
    auto& o = c.scheduler;
    int64_t queue_timeout = o.queue_timeout.count(), init_timeout = o.init_timeout.count(),
            stop_grace = o.stop_grace.count();
    h.integer("max_concurrent_starts", o.max_concurrent_starts, 1, 1000);
    h.integer("eager_instances", o.eager_instances, 0, 100'000);
    h.integer("pipeline_depth", o.pipeline_depth, 0, 16);
    h.integer("max_queue", o.max_queue, 0, 1'000'000);
    h.integer("queue_timeout_ms", queue_timeout, 0, 3'600'000);
    h.integer("init_timeout_ms", init_timeout, 100, 3'600'000);
    h.integer("stop_grace_ms", stop_grace, 0, 600'000);
    h.integer("memory_budget_mb", o.memory_budget_mb, 0, int64_t{1} << 40);
    if (auto st = h.finish(); !st) return st;
    o.queue_timeout = std::chrono::milliseconds(queue_timeout);
    o.init_timeout = std::chrono::milliseconds(init_timeout);
    o.stop_grace = std::chrono::milliseconds(stop_grace);
  }
  if (const json* sb = f.object("sandbox")) {
    JsonFields h(*sb, "sandbox");
    auto& o = c.sandbox;
    int64_t uid_base = o.uid_base, uid_count = o.uid_count, max_pids = o.max_pids,
            max_files = static_cast<int64_t>(o.max_open_files), cpu = o.cpu_max_percent;
    h.boolean("insecure", o.insecure);
    h.integer("uid_base", uid_base, 100000, 4'000'000'000);
    h.integer("uid_count", uid_count, 16, 1 << 24);
    h.integer("max_pids", max_pids, 8, 1 << 22);
    h.integer("max_open_files", max_files, 64, 1 << 20);
    h.integer("cpu_max_percent", cpu, 1, 100000);
    if (auto st = h.finish(); !st) return st;
    if (uid_base + uid_count > 4'294'967'294) {
      return Error::invalid("sandbox.uid_base + sandbox.uid_count must stay below 2^32 - 1",
                            "sandbox.uid_count");
    }
    o.uid_base = static_cast<uid_t>(uid_base);
    o.uid_count = static_cast<uint32_t>(uid_count);
    o.max_pids = static_cast<uint32_t>(max_pids);
    o.max_open_files = static_cast<rlim_t>(max_files);
    o.cpu_max_percent = static_cast<uint32_t>(cpu);
  }
  if (const json* m = f.object("metering")) {
    JsonFields h(*m, "metering");
    auto& o = c.metering;
    int64_t flush = o.flush_interval.count();
    h.integer("flush_interval_ms", flush, 10, 60'000);
    h.integer("retention_days", o.retention_days, 0, 100 * 366);
    h.number("price_per_gb_second", o.prices.per_gb_second, 0, 1e6);
    h.number("price_per_million_requests", o.prices.per_million_requests, 0, 1e9);
    h.number("price_per_million_kv_reads", o.prices.per_million_kv_reads, 0, 1e9);
    h.number("price_per_million_kv_writes", o.prices.per_million_kv_writes, 0, 1e9);
    if (auto st = h.finish(); !st) return st;
    o.flush_interval = std::chrono::milliseconds(flush);
  }
  if (const json* st = f.object("storage")) {
    JsonFields h(*st, "storage");
    auto& o = c.storage;
    int64_t lease = o.lease.count();
    h.one_of("backend", o.backend, {"sqlite", "postgres"});
    h.string("postgres", o.postgres, 4096);
    h.string("node", o.node, 128);
    h.integer("lease_ms", lease, 300, 3'600'000);
    if (auto s = h.finish(); !s) return s;
    o.lease = std::chrono::milliseconds(lease);
    if (o.backend == "postgres" && o.postgres.empty()) {
      return Error::invalid(
          "storage.postgres: the \"postgres\" backend needs a connection string, as in "
          "\"host=db.internal dbname=ember user=ember\"",
          "storage.postgres");
    }
    if (!o.node.empty() &&
        o.node.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU"
                                 "VWXYZ0123456789._:-") != std::string::npos) {
      return Error::invalid("storage.node: letters, digits, '.', '_', ':' and '-' only",
                            "storage.node");
    }
    c.kv.backend = o.backend;
  }
  if (const json* kv = f.object("kv")) {
    JsonFields h(*kv, "kv");
    auto& o = c.kv;
    h.one_of("backend", o.backend, {"sqlite", "postgres"});
    int64_t quota_mb = static_cast<int64_t>(o.limits.namespace_quota_bytes >> 20);
    h.integer("namespace_quota_mb", quota_mb, 1, int64_t{1} << 20);
    int64_t ops = o.service.max_ops_per_call;
    h.integer("max_ops_per_call", ops, 1, 1'000'000);
    if (auto st = h.finish(); !st) return st;
    o.limits.namespace_quota_bytes = static_cast<uint64_t>(quota_mb) << 20;
    o.service.max_ops_per_call = static_cast<uint32_t>(ops);
  }
  if (c.kv.backend != c.storage.backend) {
    return Error::invalid(fmt::format("kv.backend: the KV store lives where the rest does, in "
                                      "storage.backend \"{}\"",
                                      c.storage.backend),
                          "kv.backend");
  }
  if (const json* ev = f.object("events")) {
    JsonFields h(*ev, "events");
    auto& o = c.events;
    int64_t queued = static_cast<int64_t>(o.max_events);
    int64_t per_function = static_cast<int64_t>(o.max_per_function);
    int64_t queued_mb = static_cast<int64_t>(o.max_bytes >> 20);
    int64_t retry_base = o.retry_base.count(), retry_max = o.retry_max.count();
    int64_t keep = o.keep_finished.count();
    h.integer("max_queued", queued, 1, 10'000'000);
    h.integer("max_queued_per_function", per_function, 1, 10'000'000);
    h.integer("max_queued_mb", queued_mb, 1, 1 << 20);
    h.integer("max_in_flight", o.max_in_flight, 1, 10'000);
    h.integer("retry_base_ms", retry_base, 1, 3'600'000);
    h.integer("retry_max_ms", retry_max, 1, 86'400'000);
    h.integer("keep_finished_s", keep, 60, 366 * 86'400);
    h.integer("max_call_depth", o.max_call_depth, 1, 64);
    if (auto st = h.finish(); !st) return st;
    o.max_events = static_cast<size_t>(queued);
    o.max_per_function = static_cast<size_t>(per_function);
    o.max_bytes = static_cast<uint64_t>(queued_mb) << 20;
    o.retry_base = std::chrono::milliseconds(retry_base);
    o.retry_max = std::chrono::milliseconds(std::max(retry_base, retry_max));
    o.keep_finished = std::chrono::seconds(keep);
  }
  if (const json* pool = f.object("pool")) {
    JsonFields h(*pool, "pool");
    auto& o = c.pool;
    int64_t window = o.window.count();
    h.integer("max_per_flavour", o.max_per_flavour, 0, 64);
    h.integer("min_per_flavour", o.min_per_flavour, 0, 64);
    h.integer("window_s", window, 1, 86'400);
    h.integer("max_memory_mb", o.max_memory_mb, 0, 1 << 20);
    h.integer("worker_memory_mb", o.worker_memory_mb, 64, 10240);
    if (auto st = h.finish(); !st) return st;
    o.window = std::chrono::seconds(window);
  }
  if (const json* logs = f.object("logs")) {
    JsonFields h(*logs, "logs");
    h.integer("bytes_per_function", c.log_bytes_per_function, 4096, int64_t{1} << 30);
    if (auto st = h.finish(); !st) return st;
  }
  if (auto st = f.finish(); !st) return st;
  if (!runtimes_dir.empty()) c.runtime.runtimes_dir = runtimes_dir;
  if (!listen.empty()) {
    auto l = parse_listen(listen);
    if (!l) return Error::invalid("listen: " + l.error().message, "listen");
    c.listen = *l;
  }
  if (doc->contains("socket")) c.socket = socket;
  if (!state_dir.empty()) c.state_dir = state_dir;
  if (!deploy_dir.empty()) c.deploy_dir = deploy_dir;
  return {};
}

Result<Config> load(const CommandLine& cl, std::optional<std::string> env_token, bool is_root) {
  Config c;
  c.state_dir = is_root ? "/var/lib/ember" : ".ember";
  c.socket = is_root ? std::filesystem::path("/run/ember/ember.sock") : c.state_dir / "ember.sock";
  bool socket_from_file = false;
  if (cl.config_file) {
    auto text = os::read_file(*cl.config_file, 1 << 20);
    if (!text) return std::move(text).error();
    std::filesystem::path default_socket = c.socket;
    if (auto st = apply_config_json(*text, c); !st) {
      Error e = std::move(st).error();
      e.message = cl.config_file->string() + ": " + e.message;
      return e;
    }
    socket_from_file = c.socket != default_socket;
  }
  if (env_token && !env_token->empty()) c.admin_token = *env_token;
  if (cl.listen) {
    auto l = parse_listen(*cl.listen);
    if (!l) return std::move(l).error();
    c.listen = *l;
  }
  if (cl.state_dir) {
    c.state_dir = *cl.state_dir;
    // A non-root daemon keeps its socket beside its state unless told otherwise.
    if (!is_root && !socket_from_file) c.socket = c.state_dir / "ember.sock";
  }
  if (cl.socket) c.socket = *cl.socket;
  if (c.socket.string().size() > 107) {
    return Error::invalid("socket: path longer than 107 bytes: " + c.socket.string(), "socket");
  }
  if (cl.admin_token) c.admin_token = *cl.admin_token;
  if (cl.deploy_dir) c.deploy_dir = *cl.deploy_dir;
  if (cl.insecure) c.sandbox.insecure = true;
  if (cl.log_level) {
    if (!parse_log_level(*cl.log_level)) {
      return Error::invalid("--log-level must be trace, debug, info, warn, error or off");
    }
    c.log_level = *cl.log_level;
  }
  if (!c.admin_token.empty() && c.admin_token.size() < 16) {
    return Error::invalid("admin token must be at least 16 characters long", "admin_token");
  }
  return c;
}

std::vector<std::string> restart_needed(const Config& a, const Config& b) {
  std::vector<std::string> keys;
  auto check = [&](bool same, const char* key) {
    if (!same) keys.emplace_back(key);
  };
  check(a.listen.host == b.listen.host && a.listen.port == b.listen.port, "listen");
  check(a.socket == b.socket, "socket");
  check(a.state_dir == b.state_dir, "state_dir");
  check(a.deploy_dir == b.deploy_dir, "deploy_dir");
  const auto& h = a.http;
  const auto& g = b.http;
  check(h.max_connections == g.max_connections && h.max_header_bytes == g.max_header_bytes &&
            h.max_body_bytes == g.max_body_bytes && h.header_timeout_ms == g.header_timeout_ms &&
            h.body_timeout_ms == g.body_timeout_ms &&
            h.keepalive_timeout_ms == g.keepalive_timeout_ms &&
            h.write_timeout_ms == g.write_timeout_ms && h.drain_timeout_ms == g.drain_timeout_ms,
        "http");
  check(a.bundles.max_compressed_bytes == b.bundles.max_compressed_bytes &&
            a.bundles.max_extracted_bytes == b.bundles.max_extracted_bytes &&
            a.bundles.max_entries == b.bundles.max_entries &&
            a.bundles.max_ratio == b.bundles.max_ratio && a.max_versions == b.max_versions,
        "bundles");
  check(a.runtime.runtimes_dir == b.runtime.runtimes_dir, "runtimes_dir");
  check(a.runtime.python_zygote == b.runtime.python_zygote, "python_zygote");
  const auto& s = a.sandbox;
  const auto& t = b.sandbox;
  check(s.insecure == t.insecure && s.uid_base == t.uid_base && s.uid_count == t.uid_count &&
            s.max_pids == t.max_pids && s.max_open_files == t.max_open_files &&
            s.cpu_max_percent == t.cpu_max_percent,
        "sandbox");
  check(a.log_bytes_per_function == b.log_bytes_per_function, "logs");
  check(a.metering.flush_interval == b.metering.flush_interval &&
            a.metering.retention_days == b.metering.retention_days,
        "metering.flush_interval_ms/retention_days");
  check(a.storage.backend == b.storage.backend && a.storage.postgres == b.storage.postgres &&
            a.storage.node == b.storage.node && a.storage.lease == b.storage.lease,
        "storage");
  check(a.kv.backend == b.kv.backend &&
            a.kv.limits.namespace_quota_bytes == b.kv.limits.namespace_quota_bytes &&
            a.kv.service.max_ops_per_call == b.kv.service.max_ops_per_call,
        "kv");
  return keys;
}

Result<CommandLine> parse_command_line(const std::vector<std::string>& args) {
  CommandLine cl;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    std::optional<std::string> inline_value;
    if (size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    auto value = [&]() -> Result<std::string> {
      if (inline_value) return *inline_value;
      if (i + 1 >= args.size()) return Error::invalid(arg + " needs a value");
      return args[++i];
    };
    auto take = [&](std::optional<std::string>& slot) -> Status {
      auto v = value();
      if (!v) return std::move(v).error();
      slot = std::move(*v);
      return {};
    };
    Status st;
    if (arg == "--config") {
      std::optional<std::string> v;
      st = take(v);
      if (v) cl.config_file = *v;
    } else if (arg == "--listen") {
      st = take(cl.listen);
    } else if (arg == "--socket") {
      st = take(cl.socket);
    } else if (arg == "--state-dir") {
      st = take(cl.state_dir);
    } else if (arg == "--admin-token") {
      st = take(cl.admin_token);
    } else if (arg == "--deploy") {
      st = take(cl.deploy_dir);
    } else if (arg == "--log-level") {
      st = take(cl.log_level);
    } else if (arg == "--check-config" && !inline_value) {
      cl.check_config = true;
    } else if (arg == "--insecure" && !inline_value) {
      cl.insecure = true;
    } else if ((arg == "--help" || arg == "-h") && !inline_value) {
      cl.help = true;
    } else if (arg == "--version" && !inline_value) {
      cl.version = true;
    } else {
      return Error::invalid("unknown argument \"" + args[i] + "\" (see --help)");
    }
    if (!st) return std::move(st).error();
  }
  return cl;
}

std::string usage() {
  return R"(usage: emberd [options]

  --config FILE        JSON configuration file (see docs/configuration.md)
  --listen HOST:PORT   HTTP listener (default 127.0.0.1:8080; port 0 picks a free port)
  --socket PATH        Unix socket listener serving the API without a token
                       (default /run/ember/ember.sock as root, STATE_DIR/ember.sock otherwise;
                       an empty PATH disables it)
  --state-dir DIR      where functions, bundles and the admin token live
                       (default /var/lib/ember as root, ./.ember otherwise)
  --admin-token TOKEN  admin bearer token (also EMBER_ADMIN_TOKEN; default: generated into
                       STATE_DIR/admin.token on first start)
  --deploy DIR         deploy every function folder under DIR at start
  --log-level LEVEL    trace, debug, info, warn, error or off (default info)
  --check-config       validate the configuration and exit
  --insecure           start even when functions cannot be given their own network namespace
                       (they could then reach the admin API on 127.0.0.1)
  --version            print the version and exit
)";
}

}  // namespace ember::config
