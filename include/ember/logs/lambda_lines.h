// Lambda's START, END and REPORT lines, which frame a call's own output in the function's log
// (the same text AWS writes to CloudWatch, so tools that read those lines read these).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "ember/logs/store.h"

namespace ember::logs {

struct CallReport {
  std::chrono::nanoseconds duration{0};
  int64_t billed_ms = 0;
  int memory_mb = 0;         // configured
  uint64_t memory_peak = 0;  // bytes; 0 when unknown, and then not reported
  bool cold = false;
  std::chrono::nanoseconds init{0};  // reported on cold starts
};

LogLine start_line(int64_t wall_ms, const std::string& request_id, int version);
LogLine end_line(int64_t wall_ms, const std::string& request_id);
LogLine report_line(int64_t wall_ms, const std::string& request_id, const CallReport& report);

}  // namespace ember::logs
