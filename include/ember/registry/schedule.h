// Schedule expressions of a manifest's "schedule" (docs/events.md#schedules), in the syntax of
// EventBridge: rate(5 minutes) and cron(0 3 * * ? *), in UTC. Ember also takes seconds in a
// rate: rate(1 second).
#pragma once

#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ember/common/result.h"

namespace ember::registry {

class Schedule {
 public:
  // Errc::kInvalid, naming what is wrong, for anything that is not a valid expression.
  static Result<Schedule> parse(std::string_view expression);

  // The first time it fires strictly after `after_ms` (ms since the epoch, UTC); nullopt when
  // it never fires again (a cron whose years are past). A rate fires at the multiples of its
  // period since the epoch, so every node and every restart agrees on when.
  std::optional<int64_t> next_after(int64_t after_ms) const;
  const std::string& expression() const { return expression_; }

 private:
  std::string expression_;
  int64_t period_ms_ = 0;  // a rate; 0 for a cron
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> days_;      // 1 to 31
  bool last_day_ = false;     // "L": the last day of the month
  bool any_day_ = false;      // day of month "?" (the day of week decides)
  std::bitset<13> months_;    // 1 to 12
  std::bitset<8> weekdays_;   // 1 (Sunday) to 7 (Saturday)
  bool any_weekday_ = false;  // day of week "?" (the day of month decides)
  std::bitset<230> years_;    // 1970 to 2199
};

}  // namespace ember::registry
