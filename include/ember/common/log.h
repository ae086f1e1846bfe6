// Logging: spdlog to stderr, one line per event. journald adds its own timestamps and the unit
// name, so lines carry only level and message; context is written as "[fn=NAME req=ID]".
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "ember/common/clock.h"

namespace ember {

// Installs the stderr logger as spdlog's default. Safe to call more than once.
void init_logging(spdlog::level::level_enum level);

// "trace", "debug", "info", "warn", "error", "off"; nullopt for anything else.
std::optional<spdlog::level::level_enum> parse_log_level(std::string_view name);

// A token bucket for log lines that clients or function code can trigger at will: at most
// `burst` lines at once, refilled at `per_second`. Lines that do not pass are counted and the
// count is reported with the next line that does. One owner thread.
class LogRateLimiter {
 public:
  LogRateLimiter(double per_second, double burst, const Clock& clock = system_clock());

  // True when a line may be written now; `suppressed` receives how many were dropped since the
  // last line that passed.
  bool allow(uint64_t& suppressed);

 private:
  const Clock& clock_;
  double per_second_;
  double burst_;
  double tokens_;
  Clock::time_point last_;
  uint64_t dropped_ = 0;
};

}  // namespace ember
