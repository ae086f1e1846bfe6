#include "ember/os/proc_stats.h"

#include <gtest/gtest.h>
#include <time.h>
#include <unistd.h>

#include <chrono>

namespace ember::os {
namespace {

std::chrono::nanoseconds thread_cpu() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

TEST(SchedTimes, CountTheMainThreadsTimeOnACpu) {
  // The test runs on the process's main thread, whose line /proc/PID/schedstat is.
  auto before = sched_times(::getpid());
  if (!before) GTEST_SKIP() << "this kernel keeps no scheduler statistics (CONFIG_SCHED_INFO)";
  const auto start = thread_cpu();
  volatile uint64_t sink = 0;
  while (thread_cpu() - start < std::chrono::milliseconds(30)) sink = sink + 1;
  auto after = sched_times(::getpid());
  ASSERT_TRUE(after.has_value());
  EXPECT_GE(after->on_cpu - before->on_cpu, std::chrono::milliseconds(25));
  EXPECT_GE(after->waiting_for_cpu, before->waiting_for_cpu);
}

TEST(SchedTimes, AProcessThatIsGoneHasNone) {
  EXPECT_FALSE(sched_times(0).has_value());
  EXPECT_FALSE(sched_times(-1).has_value());
}

}  // namespace
}  // namespace ember::os
