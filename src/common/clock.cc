#include "ember/common/clock.h"

namespace ember {
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
