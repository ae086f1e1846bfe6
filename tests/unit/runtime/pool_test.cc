// Which functions a pre-initialised worker can serve: what cannot change after a runtime has
// started decides it.
#include "ember/runtime/pool.h"

#include <gtest/gtest.h>

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
  // Python runs with -I: it reads no PYTHON* variable, whenever it is set.
  auto python = config(registry::Runtime::kPython);
  python.env["PYTHONPATH"] = "/x";
  EXPECT_TRUE(poolable(python));
}

}  // namespace
}  // namespace ember::runtime
