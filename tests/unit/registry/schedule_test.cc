// Schedule expressions: what is accepted, what is refused with a reason, and when each fires.
#include "ember/registry/schedule.h"

#include <gtest/gtest.h>

#include "ember/common/clock.h"

namespace ember::registry {
namespace {

// 2026-12-06T15:51:10.500Z, a Sunday.
constexpr int64_t kNow = 1796572270500;

std::string at(std::optional<int64_t> ms) {
  return ms ? format_utc(*ms / 1000, "%Y-%m-%dT%H:%M:%S %a") : "never";
}

std::optional<int64_t> next(std::string_view expression, int64_t after = kNow) {
  auto s = Schedule::parse(expression);
  EXPECT_TRUE(s.ok()) << expression << ": " << (s.ok() ? "" : s.error().message);
  return s.ok() ? s->next_after(after) : std::nullopt;
}

TEST(Schedule, NowIsWhatTheTestsSayItIs) { EXPECT_EQ(at(kNow), "2026-12-06T15:51:10 Sun"); }

TEST(Schedule, RatesFireAtMultiplesOfTheirPeriod) {
  EXPECT_EQ(at(next("rate(1 second)")), "2026-12-06T15:51:11 Sun");
  EXPECT_EQ(at(next("rate(5 minutes)")), "2026-12-06T15:55:00 Sun");
  EXPECT_EQ(at(next("rate(1 minute)")), "2026-12-06T15:52:00 Sun");
  EXPECT_EQ(at(next("rate(2 hours)")), "2026-12-06T16:00:00 Sun");
  EXPECT_EQ(at(next("rate(1 day)")), "2026-12-07T00:00:00 Mon");
  // Strictly after: a fire time asks for the one after it.
  EXPECT_EQ(at(next("rate(5 minutes)", *next("rate(5 minutes)"))), "2026-12-06T16:00:00 Sun");
}

TEST(Schedule, CronsFireOnTheirFieldsInUtc) {
  EXPECT_EQ(at(next("cron(0 3 * * ? *)")), "2026-12-07T03:00:00 Mon");
  EXPECT_EQ(at(next("cron(*/15 * * * ? *)")), "2026-12-06T16:00:00 Sun");
  EXPECT_EQ(at(next("cron(0/15 * * * ? *)")), "2026-12-06T16:00:00 Sun");
  EXPECT_EQ(at(next("cron(52 15 * * ? *)")), "2026-12-06T15:52:00 Sun");
  EXPECT_EQ(at(next("cron(0 9 ? * MON-FRI *)")), "2026-12-07T09:00:00 Mon");
  EXPECT_EQ(at(next("cron(0 9 ? * 7 *)")), "2026-12-12T09:00:00 Sat") << "7 is Saturday";
  EXPECT_EQ(at(next("cron(0 9 ? * SUN,WED *)")), "2026-12-09T09:00:00 Wed");
  EXPECT_EQ(at(next("cron(0 0 1 JAN ? *)")), "2027-01-01T00:00:00 Fri");
  EXPECT_EQ(at(next("cron(0 12 L * ? *)")), "2026-12-31T12:00:00 Thu");
  EXPECT_EQ(at(next("cron(0 12 L FEB ? 2028)")), "2028-02-29T12:00:00 Tue") << "a leap year";
  EXPECT_EQ(at(next("cron(0 0 31 * ? *)", kNow + 31LL * 86'400'000)), "2027-01-31T00:00:00 Sun");
  EXPECT_EQ(at(next("cron(0 0 29 2 ? 2027)")), "never") << "no such day";
  EXPECT_EQ(at(next("cron(0 0 * * ? 2020-2025)")), "never") << "years past";
  EXPECT_EQ(at(next("cron(30 10 ? * * 2030)")), "2030-01-01T10:30:00 Tue");
}

TEST(Schedule, WhatIsNotAnExpressionIsRefusedWithItsReason) {
  for (const char* bad : {"",
                          "every 5 minutes",
                          "rate(5)",
                          "rate(0 minutes)",
                          "rate(-1 minutes)",
                          "rate(5 weeks)",
                          "rate(1.5 hours)",
                          "cron(0 3 * * *)",
                          "cron(0 3 * * * *)",
                          "cron(0 3 ? * ? *)",
                          "cron(60 3 * * ? *)",
                          "cron(0 24 * * ? *)",
                          "cron(0 3 32 * ? *)",
                          "cron(0 3 * 13 ? *)",
                          "cron(0 3 ? * 8 *)",
                          "cron(0 3 ? * FOO *)",
                          "cron(0 3 15W * ? *)",
                          "cron(0 3 ? * 6#3 *)",
                          "cron(0 3 * * ? 1969)",
                          "cron(5-1 * * * ? *)",
                          "cron(*/0 * * * ? *)"}) {
    auto s = Schedule::parse(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.error().code, Errc::kInvalid);
    EXPECT_NE(s.error().message.find(bad), std::string::npos) << s.error().message;
  }
}

}  // namespace
}  // namespace ember::registry
