#include "ember/logs/lambda_lines.h"

#include <fmt/format.h>

namespace ember::logs {

namespace {
LogLine ember_line(int64_t wall_ms, const std::string& request_id, std::string text) {
  return LogLine{0, wall_ms, "ember", request_id, std::move(text)};
}
}  // namespace

LogLine start_line(int64_t wall_ms, const std::string& request_id, int version) {
  return ember_line(wall_ms, request_id,
                    fmt::format("START RequestId: {} Version: {}", request_id, version));
}

LogLine end_line(int64_t wall_ms, const std::string& request_id) {
  return ember_line(wall_ms, request_id, "END RequestId: " + request_id);
}

LogLine report_line(int64_t wall_ms, const std::string& request_id, const CallReport& r) {
  using ms = std::chrono::duration<double, std::milli>;
  // Written on every call: formatted into one buffer, then one string.
  fmt::memory_buffer text;
  fmt::format_to(
      std::back_inserter(text),
      "REPORT RequestId: {}\tDuration: {:.2f} ms\tBilled Duration: {} ms\tMemory Size: {} MB",
      request_id, ms(r.duration).count(), r.billed_ms, r.memory_mb);
  if (r.memory_peak > 0) {
    fmt::format_to(std::back_inserter(text), "\tMax Memory Used: {} MB",
                   (r.memory_peak + (1 << 20) - 1) >> 20);
  }
  if (r.cold)
    fmt::format_to(std::back_inserter(text), "\tInit Duration: {:.2f} ms", ms(r.init).count());
  return ember_line(wall_ms, request_id, fmt::to_string(text));
}

}  // namespace ember::logs
