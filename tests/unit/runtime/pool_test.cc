// Which functions a pre-initialised worker can serve: what cannot change after a runtime has
// started decides it.
#include "ember/runtime/pool.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace ember::runtime {
namespace {

registry::FunctionConfig config(registry::Runtime runtime) {
  registry::FunctionConfig c;
  c.runtime = runtime;
  c.handler = "index.handler";
  return c;
}

TEST(Poolable, NodeAndPythonInTheirOwnNetwork) {
  EXPECT_TRUE(poolable(config(registry::Runtime::kNode)));
  EXPECT_TRUE(poolable(config(registry::Runtime::kPython)));
  EXPECT_FALSE(poolable(config(registry::Runtime::kProvided))) << "its bootstrap is the bundle's";
  auto host = config(registry::Runtime::kNode);
  host.network = "host";
  EXPECT_FALSE(poolable(host)) << "a pooled worker has a network namespace of its own";
}

TEST(Poolable, NotWithVariablesNodeReadsOnlyAtItsStart) {
  for (const char* name : {"NODE_OPTIONS", "NODE_PATH", "UV_THREADPOOL_SIZE"}) {
    auto c = config(registry::Runtime::kNode);
    c.env[name] = "x";
    EXPECT_FALSE(poolable(c)) << name;
  }
  auto other = config(registry::Runtime::kNode);
  other.env["GREETING"] = "hi";
  EXPECT_TRUE(poolable(other));
  // The C library's, the dynamic loader's and OpenSSL's, for either runtime.
  for (auto runtime : {registry::Runtime::kNode, registry::Runtime::kPython}) {
    for (const char* name : {"LD_LIBRARY_PATH", "LD_PRELOAD", "GLIBC_TUNABLES", "MALLOC_ARENA_MAX",
                             "OPENSSL_CONF", "LANG", "LC_ALL"}) {
      auto c = config(runtime);
      c.env[name] = "x";
      EXPECT_FALSE(poolable(c)) << name;
    }
  }
  // Python runs with -I: it reads no PYTHON* variable, whenever it is set.
  auto python = config(registry::Runtime::kPython);
  python.env["PYTHONPATH"] = "/x";
  EXPECT_TRUE(poolable(python));
}

TEST(LaunchSpec, AVariableTheFunctionSetsReplacesTheBaseOne) {
  registry::FunctionRecord record;
  record.name = "f";
  record.active_version = 1;
  registry::Version v;
  v.number = 1;
  v.config = config(registry::Runtime::kPython);
  v.config.handler = "main.handler";
  v.config.env = {{"TZ", "Europe/Paris"}, {"GREETING", "hi"}};
  record.versions.push_back(v);
  auto spec = launch_spec(record, "/bundle", WorkerPaths{"/var/task", "/opt/ember/runtime"},
                          RuntimeOptions{});
  ASSERT_TRUE(spec.ok());
  int tz = 0;
  for (const auto& entry : spec->env) {
    if (entry.starts_with("TZ=")) {
      ++tz;
      EXPECT_EQ(entry, "TZ=Europe/Paris");
    }
  }
  EXPECT_EQ(tz, 1) << "once, the function's: getenv would take the first of two";
  EXPECT_NE(std::find(spec->env.begin(), spec->env.end(), "PATH=/usr/local/bin:/usr/bin:/bin"),
            spec->env.end());
}

// The pool's size follows the starts of a flavour: each start within the window keeps one more
// worker waiting, up to the maximum; once starts stop, it shrinks back to the minimum.
TEST(PoolSizing, EachStartWithinTheWindowKeepsOneMoreWorkerUpToTheMaximum) {
  FakeClock clock;
  PoolOptions options;
  options.min_per_flavour = 1;
  options.max_per_flavour = 4;
  options.window = std::chrono::seconds(60);
  PoolSizing sizing;
  EXPECT_EQ(sizing.target(clock.now(), options), 1) << "no start yet: the minimum";
  sizing.started(clock.now());
  EXPECT_EQ(sizing.target(clock.now(), options), 1);
  for (int i = 0; i < 2; ++i) sizing.started(clock.now());
  EXPECT_EQ(sizing.target(clock.now(), options), 3);
  for (int i = 0; i < 5; ++i) sizing.started(clock.now());
  EXPECT_EQ(sizing.target(clock.now(), options), 4) << "8 starts, at most 4 kept";
}

TEST(PoolSizing, StartsOlderThanTheWindowNoLongerCount) {
  FakeClock clock;
  PoolOptions options;
  options.min_per_flavour = 1;
  options.max_per_flavour = 10;
  options.window = std::chrono::seconds(60);
  PoolSizing sizing;
  for (int i = 0; i < 5; ++i) sizing.started(clock.now());
  clock.advance(std::chrono::seconds(30));
  for (int i = 0; i < 2; ++i) sizing.started(clock.now());
  EXPECT_EQ(sizing.target(clock.now(), options), 7);
  clock.advance(std::chrono::seconds(30));
  EXPECT_EQ(sizing.target(clock.now(), options), 7) << "the first five are exactly 60 s old";
  clock.advance(std::chrono::milliseconds(1));
  EXPECT_EQ(sizing.target(clock.now(), options), 2) << "only the last two remain";
  clock.advance(std::chrono::seconds(30));
  EXPECT_EQ(sizing.target(clock.now(), options), 1) << "back to the minimum";
}

TEST(PoolSizing, AMaximumOfZeroKeepsNoneAndTheMinimumNeverPassesTheMaximum) {
  FakeClock clock;
  PoolSizing sizing;
  for (int i = 0; i < 3; ++i) sizing.started(clock.now());
  PoolOptions off;
  off.max_per_flavour = 0;
  off.min_per_flavour = 2;
  EXPECT_EQ(sizing.target(clock.now(), off), 0);
  PoolOptions small;
  small.min_per_flavour = 5;
  small.max_per_flavour = 2;
  EXPECT_EQ(sizing.target(clock.now(), small), 2);
  PoolOptions none_kept;
  none_kept.min_per_flavour = 0;
  none_kept.max_per_flavour = 4;
  clock.advance(std::chrono::minutes(2));
  EXPECT_EQ(sizing.target(clock.now(), none_kept), 0) << "no minimum and no recent start";
}

}  // namespace
}  // namespace ember::runtime
