#include "ember/common/clock.h"

#include <ctime>

namespace ember {

std::string format_utc(int64_t seconds, const char* pattern) {
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[64];
  const size_t n = std::strftime(buf, sizeof buf, pattern, &tm);
  return std::string(buf, n);
}
namespace {

class SystemClock final : public Clock {
 public:
  time_point now() const override {
    return time_point(std::chrono::steady_clock::now().time_since_epoch());
  }
  int64_t wall_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

}  // namespace

const Clock& system_clock() {
  static const SystemClock clock;
  return clock;
}

}  // namespace ember
