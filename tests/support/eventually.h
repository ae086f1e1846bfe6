// Polling for conditions that settle asynchronously in e2e tests: state the daemon reaches in
// its own time (an instance idle, a process gone), observed rather than waited for with a sleep.
#pragma once

#include <chrono>
#include <thread>

namespace ember::testing {

// Polls `done` every 20 ms for up to `limit`; true as soon as it holds.
template <class F>
bool eventually(F done, std::chrono::milliseconds limit = std::chrono::milliseconds(10'000)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

}  // namespace ember::testing
