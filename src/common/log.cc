#include "ember/common/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <algorithm>

namespace ember {

void init_logging(spdlog::level::level_enum level) {
  auto logger = spdlog::get("ember");
  if (!logger) {
    logger = spdlog::stderr_logger_mt("ember");
    // Milliseconds matter when reading a cold start; journald would add the date itself, but
    // the same binary also runs in a terminal.
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %L %v");
    spdlog::set_default_logger(logger);
  }
  logger->set_level(level);
  logger->flush_on(spdlog::level::info);
}

std::optional<spdlog::level::level_enum> parse_log_level(std::string_view name) {
  using spdlog::level::level_enum;
  if (name == "trace") return level_enum::trace;
  if (name == "debug") return level_enum::debug;
  if (name == "info") return level_enum::info;
  if (name == "warn") return level_enum::warn;
  if (name == "error") return level_enum::err;
  if (name == "off") return level_enum::off;
  return std::nullopt;
}

LogRateLimiter::LogRateLimiter(double per_second, double burst, const Clock& clock)
    : clock_(clock), per_second_(per_second), burst_(burst), tokens_(burst), last_(clock.now()) {}

bool LogRateLimiter::allow(uint64_t& suppressed) {
  auto now = clock_.now();
  double elapsed = std::chrono::duration<double>(now - last_).count();
  last_ = now;
  tokens_ = std::min(burst_, tokens_ + elapsed * per_second_);
  if (tokens_ < 1.0) {
    ++dropped_;
    return false;
  }
  tokens_ -= 1.0;
  suppressed = dropped_;
  dropped_ = 0;
  return true;
}

}  // namespace ember
