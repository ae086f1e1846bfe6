#include "ember/config/config.h"

#include <gtest/gtest.h>

#include "temp_dir.h"

namespace ember::config {
namespace {

TEST(ParseListen, AcceptsHostPortForms) {
  auto a = parse_listen("127.0.0.1:8080");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 8080);
  auto b = parse_listen("[::1]:0");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->port, 0);
  for (const char* bad : {"8080", ":80", "host:", "host:65536", "host:8x", "[::1:80"}) {
    EXPECT_FALSE(parse_listen(bad).ok()) << bad;
  }
}

TEST(CommandLine, ParsesEveryFlagInBothForms) {
  auto cl = parse_command_line({"--config", "/etc/ember.json", "--listen=0.0.0.0:1", "--socket",
                                "/s", "--state-dir", "/d", "--admin-token", "t", "--deploy", "ex",
                                "--log-level", "debug", "--check-config"});
  ASSERT_TRUE(cl.ok()) << cl.error().message;
  EXPECT_EQ(cl->config_file->string(), "/etc/ember.json");
  EXPECT_EQ(*cl->listen, "0.0.0.0:1");
  EXPECT_EQ(*cl->socket, "/s");
  EXPECT_EQ(*cl->state_dir, "/d");
  EXPECT_EQ(*cl->admin_token, "t");
  EXPECT_EQ(*cl->deploy_dir, "ex");
  EXPECT_EQ(*cl->log_level, "debug");
  EXPECT_TRUE(cl->check_config);
}

TEST(CommandLine, RejectsUnknownAndIncompleteFlags) {
  EXPECT_FALSE(parse_command_line({"--listn", "x"}).ok());
  EXPECT_FALSE(parse_command_line({"--listen"}).ok());
  EXPECT_FALSE(parse_command_line({"positional"}).ok());
}

TEST(Load, DefaultsDependOnPrivilege) {
  CommandLine cl;
  auto root = load(cl, std::nullopt, true);
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(root->state_dir, "/var/lib/ember");
  EXPECT_EQ(root->socket, "/run/ember/ember.sock");
  EXPECT_EQ(root->listen.port, 8080);
  auto user = load(cl, std::nullopt, false);
  EXPECT_EQ(user->state_dir, ".ember");
  EXPECT_EQ(user->socket, ".ember/ember.sock");
}

TEST(Load, FlagsBeatEnvironmentBeatFile) {
  testing::TempDir t;
  testing::write_text(t / "c.json",
                      R"({"listen": "127.0.0.1:9000", "admin_token": "from-file-0123456789"})");
  CommandLine cl;
  cl.config_file = t / "c.json";
  auto c = load(cl, std::nullopt, false);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->listen.port, 9000);
  EXPECT_EQ(c->admin_token, "from-file-0123456789");
  c = load(cl, std::string("from-env-0123456789"), false);
  EXPECT_EQ(c->admin_token, "from-env-0123456789");
  cl.admin_token = "from-flag-0123456789";
  cl.listen = "127.0.0.1:9001";
  c = load(cl, std::string("from-env-0123456789"), false);
  EXPECT_EQ(c->admin_token, "from-flag-0123456789");
  EXPECT_EQ(c->listen.port, 9001);
}

TEST(Load, ShortTokensAreRefused) {
  CommandLine cl;
  cl.admin_token = "short";
  EXPECT_FALSE(load(cl, std::nullopt, false).ok());
}

TEST(ConfigFile, EveryKeyIsAccepted) {
  Config c;
  auto st = apply_config_json(R"({
    "listen": "0.0.0.0:8081", "socket": "/tmp/e.sock", "state_dir": "/tmp/e",
    "admin_token": "0123456789abcdef", "deploy_dir": "/srv/fns", "log_level": "warn",
    "http": {"max_connections": 10, "max_header_bytes": 4096, "max_body_bytes": 2048,
             "header_timeout_ms": 500, "body_timeout_ms": 600, "keepalive_timeout_ms": 700,
             "write_timeout_ms": 800, "drain_timeout_ms": 900},
    "bundles": {"max_compressed_bytes": 4096, "max_extracted_bytes": 8192,
                "max_entries": 5, "max_ratio": 50, "max_versions": 3},
    "python_zygote": false
  })",
                              c);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(c.listen.host, "0.0.0.0");
  EXPECT_EQ(c.http.max_connections, 10);
  EXPECT_EQ(c.http.drain_timeout_ms, 900);
  EXPECT_EQ(c.bundles.max_entries, 5u);
  EXPECT_EQ(c.max_versions, 3);
  EXPECT_EQ(c.log_level, "warn");
  EXPECT_FALSE(c.runtime.python_zygote);
}

TEST(ConfigFile, ErrorsCarryTheJsonPath) {
  struct Case {
    const char* text;
    const char* field;
  } cases[] = {
      {R"({"lisen": "x"})", "lisen"},
      {R"({"http": {"max_conections": 3}})", "http.max_conections"},
      {R"({"http": {"max_connections": 0}})", "http.max_connections"},
      {R"({"http": {"header_timeout_ms": "fast"}})", "http.header_timeout_ms"},
      {R"({"bundles": {"max_ratio": 1}})", "bundles.max_ratio"},
      {R"({"log_level": "verbose"})", "log_level"},
      {R"({"http": 5})", "http"},
      {R"({"listen": "nowhere"})", "listen"},
      {R"({"metering": {"price_per_gb_second": -1}})", "metering.price_per_gb_second"},
      {R"({"metering": {"price_per_gb_second": "cheap"}})", "metering.price_per_gb_second"},
      {R"({"metering": {"flush_interval_ms": 0}})", "metering.flush_interval_ms"},
  };
  for (const auto& k : cases) {
    Config c;
    auto st = apply_config_json(k.text, c);
    ASSERT_FALSE(st.ok()) << k.text;
    EXPECT_EQ(st.error().field, k.field) << k.text << " -> " << st.error().message;
  }
  Config c;
  EXPECT_FALSE(apply_config_json("{not json", c).ok());
}

TEST(ConfigFile, ReadsTheMeteringSection) {
  Config c;
  auto st = apply_config_json(R"({"metering": {"flush_interval_ms": 250, "retention_days": 30,
      "price_per_gb_second": 0.0000166667, "price_per_million_requests": 0.2}})",
                              c);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(c.metering.flush_interval, std::chrono::milliseconds(250));
  EXPECT_EQ(c.metering.retention_days, 30);
  EXPECT_DOUBLE_EQ(c.metering.prices.per_gb_second, 0.0000166667);
  EXPECT_DOUBLE_EQ(c.metering.prices.per_million_requests, 0.2);
}

TEST(ConfigFile, ReadsTheKvSection) {
  Config c;
  EXPECT_EQ(c.kv.backend, "sqlite");
  EXPECT_EQ(c.kv.limits.namespace_quota_bytes, uint64_t{100} << 20);
  EXPECT_EQ(c.kv.service.max_ops_per_call, 1000u);
  auto st = apply_config_json(R"({"kv": {"backend": "sqlite", "namespace_quota_mb": 5,
      "max_ops_per_call": 20}, "metering": {"price_per_million_kv_reads": 0.25,
      "price_per_million_kv_writes": 1.25}})",
                              c);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(c.kv.limits.namespace_quota_bytes, uint64_t{5} << 20);
  EXPECT_EQ(c.kv.service.max_ops_per_call, 20u);
  EXPECT_DOUBLE_EQ(c.metering.prices.per_million_kv_reads, 0.25);
  EXPECT_DOUBLE_EQ(c.metering.prices.per_million_kv_writes, 1.25);
  for (const char* bad : {R"({"kv": {"backend": "redis"}})", R"({"kv": {"namespace_quota_mb": 0}})",
                          R"({"kv": {"max_ops_per_call": 0}})", R"({"kv": {"quota": 1}})"}) {
    Config d;
    auto refused = apply_config_json(bad, d);
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_EQ(refused.error().field.rfind("kv.", 0), 0u) << bad << ": " << refused.error().field;
  }
}

TEST(ConfigFile, ReadsTheStorageSection) {
  Config c;
  EXPECT_EQ(c.storage.backend, "sqlite");
  auto st = apply_config_json(R"({"storage": {"backend": "postgres",
      "postgres": "host=db dbname=ember", "node": "node-1.a:b_c", "lease_ms": 3000}})",
                              c);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(c.storage.postgres, "host=db dbname=ember");
  EXPECT_EQ(c.storage.node, "node-1.a:b_c");
  EXPECT_EQ(c.storage.lease, std::chrono::milliseconds(3000));
  EXPECT_EQ(c.kv.backend, "postgres") << "the KV store follows";
  Config before;
  EXPECT_EQ(restart_needed(before, c), std::vector<std::string>({"storage", "kv"}));
  const std::pair<const char*, const char*> bad[] = {
      {R"({"storage": {"backend": "postgres"}})", "storage.postgres"},
      {R"({"storage": {"backend": "mysql"}})", "storage.backend"},
      {R"({"storage": {"backend": "postgres", "postgres": "x", "node": "a b"}})", "storage.node"},
      {R"({"storage": {"lease_ms": 10}})", "storage.lease_ms"},
      {R"({"kv": {"backend": "postgres"}})", "kv.backend"},
      {R"({"storage": {"backend": "postgres", "postgres": "x"}, "kv": {"backend": "sqlite"}})",
       "kv.backend"}};
  for (const auto& [text, field] : bad) {
    Config d;
    auto refused = apply_config_json(text, d);
    ASSERT_FALSE(refused.ok()) << text;
    EXPECT_EQ(refused.error().field, field) << text << ": " << refused.error().message;
  }
}

TEST(ConfigFile, ReadsTheSchedulerSection) {
  Config c;
  auto st = apply_config_json(R"({"scheduler": {"max_concurrent_starts": 3, "eager_instances": 4,
      "pipeline_depth": 0, "max_queue": 50, "queue_timeout_ms": 1500}})",
                              c);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(c.scheduler.max_concurrent_starts, 3);
  EXPECT_EQ(c.scheduler.eager_instances, 4);
  EXPECT_EQ(c.scheduler.pipeline_depth, 0);
  EXPECT_EQ(c.scheduler.max_queue, 50);
  EXPECT_EQ(c.scheduler.queue_timeout, std::chrono::milliseconds(1500));
  auto bad = apply_config_json(R"({"scheduler": {"eager_instances": -1}})", c);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().field, "scheduler.eager_instances");
  auto deep = apply_config_json(R"({"scheduler": {"pipeline_depth": 17}})", c);
  ASSERT_FALSE(deep.ok());
  EXPECT_EQ(deep.error().field, "scheduler.pipeline_depth");
}

TEST(ConfigFile, ReadsThePoolSection) {
  Config c;
  EXPECT_EQ(c.pool.max_per_flavour, 4);
  EXPECT_EQ(c.pool.min_per_flavour, 1);
  auto st = apply_config_json(R"({"pool": {"max_per_flavour": 8, "min_per_flavour": 2,
      "window_s": 30, "max_memory_mb": 2048, "worker_memory_mb": 256}})",
                              c);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(c.pool.max_per_flavour, 8);
  EXPECT_EQ(c.pool.min_per_flavour, 2);
  EXPECT_EQ(c.pool.window, std::chrono::seconds(30));
  EXPECT_EQ(c.pool.max_memory_mb, 2048);
  EXPECT_EQ(c.pool.worker_memory_mb, 256);
  for (const char* bad : {R"({"pool": {"max_per_flavour": -1}})", R"({"pool": {"window_s": 0}})",
                          R"({"pool": {"worker_memory_mb": 32}})", R"({"pool": {"size": 2}})"}) {
    Config d;
    auto refused = apply_config_json(bad, d);
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_EQ(refused.error().field.rfind("pool.", 0), 0u) << bad << ": " << refused.error().field;
  }
}

TEST(ConfigFile, ReadsTheEventsSection) {
  Config c;
  EXPECT_EQ(c.events.max_call_depth, 16);
  auto st = apply_config_json(R"({"events": {"max_queued": 500, "max_in_flight": 4,
      "retry_base_ms": 250, "retry_max_ms": 100, "keep_finished_s": 3600,
      "max_call_depth": 3}})",
                              c);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(c.events.max_events, 500u);
  EXPECT_EQ(c.events.max_in_flight, 4);
  EXPECT_EQ(c.events.retry_base, std::chrono::milliseconds(250));
  EXPECT_EQ(c.events.retry_max, std::chrono::milliseconds(250)) << "never below the base";
  EXPECT_EQ(c.events.keep_finished, std::chrono::seconds(3600));
  EXPECT_EQ(c.events.max_call_depth, 3);
  for (const char* bad :
       {R"({"events": {"max_call_depth": 0}})", R"({"events": {"max_call_depth": 65}})",
        R"({"events": {"max_queued": 0}})"}) {
    Config d;
    auto refused = apply_config_json(bad, d);
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_EQ(refused.error().field.rfind("events.", 0), 0u)
        << bad << ": " << refused.error().field;
  }
}

TEST(Reload, NamesOnlyTheSettingsThatNeedARestart) {
  Config a;
  Config b = a;
  EXPECT_TRUE(restart_needed(a, b).empty());
  // Live settings.
  b.log_level = "debug";
  b.scheduler.max_queue = 7;
  b.scheduler.eager_instances = 1;
  b.admin_token = "another-token-0123456789";
  b.metering.prices.per_gb_second = 1;
  EXPECT_TRUE(restart_needed(a, b).empty());
  b.listen.port = 9999;
  b.sandbox.max_pids = 32;
  b.http.max_connections = 5;
  b.runtime.python_zygote = false;
  EXPECT_EQ(restart_needed(a, b),
            (std::vector<std::string>{"listen", "http", "python_zygote", "sandbox"}));
}

}  // namespace
}  // namespace ember::config
