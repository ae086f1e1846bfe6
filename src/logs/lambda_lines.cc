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
  std::string text = fmt::format(
      "REPORT RequestId: {}\tDuration: {:.2f} ms\tBilled Duration: {} ms\tMemory Size: {} MB",
      request_id, ms(r.duration).count(), r.billed_ms, r.memory_mb);
  if (r.memory_peak > 0) {
    text += fmt::format("\tMax Memory Used: {} MB", (r.memory_peak + (1 << 20) - 1) >> 20);
  }
  if (r.cold) text += fmt::format("\tInit Duration: {:.2f} ms", ms(r.init).count());
  return ember_line(wall_ms, request_id, std::move(text));
}

}  // namespace ember::logs
