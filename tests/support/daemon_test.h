// A test fixture with a fresh emberd per test: started in SetUp, stopped in TearDown, which
// expects a clean exit (status 0) from SIGTERM.
#pragma once

#include <gtest/gtest.h>

#include "daemon.h"
#include "temp_dir.h"

namespace ember::testing {

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(daemon_.start()) << daemon_.log(); }
  void TearDown() override {
    if (daemon_.running()) {
      EXPECT_EQ(daemon_.stop(SIGTERM), 0) << daemon_.log();
    }
  }

  TempDir tmp_;
  Daemon daemon_{tmp_ / "state"};
};

}  // namespace ember::testing
