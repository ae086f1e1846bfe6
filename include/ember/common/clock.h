// Time as an injectable dependency, so policy code can be tested by moving a fake clock instead
// of sleeping.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace ember {

class Clock {
 public:
  using duration = std::chrono::nanoseconds;
  using time_point = std::chrono::time_point<std::chrono::steady_clock, duration>;

  virtual ~Clock() = default;
  // Monotonic time for durations and deadlines.
  virtual time_point now() const = 0;
  // Wall-clock time in milliseconds since the Unix epoch, for records shown to users.
  virtual int64_t wall_ms() const = 0;
};

// `seconds` since the epoch written in UTC with strftime's `pattern`.
std::string format_utc(int64_t seconds, const char* pattern);

// The real clocks; one process-wide instance, safe from any thread.
const Clock& system_clock();

// A clock that moves only when told to. Not thread-safe: tests drive it from one thread.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t wall_ms = 1'700'000'000'000) : wall_ms_(wall_ms) {}
  time_point now() const override { return now_; }
  int64_t wall_ms() const override { return wall_ms_; }
  void advance(duration d) {
    now_ += d;
    wall_ms_ += std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  }

 private:
  time_point now_{};
  int64_t wall_ms_;
};

}  // namespace ember
