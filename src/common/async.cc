#include "ember/common/async.h"

#include <spdlog/spdlog.h>

namespace ember {

std::function<void(std::exception_ptr)> log_escaped(std::string what) {
  return [what = std::move(what)](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::error("{} failed: {}", what, ex.what());
    } catch (...) {
      spdlog::error("{} failed with an unknown exception", what);
    }
  };
}

void Event::set() {
  set_ = true;
  for (auto* timer : waiting_) timer->cancel();
}

boost::asio::awaitable<bool> Event::wait_for(std::chrono::nanoseconds limit) {
  if (set_) co_return true;
  boost::asio::steady_timer timer(executor_);
  if (limit >= std::chrono::hours(24 * 365)) {
    timer.expires_at(boost::asio::steady_timer::time_point::max());
  } else {
    timer.expires_after(limit);
  }
  auto it = waiting_.insert(waiting_.end(), &timer);
  co_await timer.async_wait(kAwait);
  waiting_.erase(it);
  co_return set_;
}

boost::asio::awaitable<void> Event::wait() {
  // The result is taken into a variable: GCC 12 miscompiles a co_await in a loop condition.
  while (true) {
    const bool set = co_await wait_for(std::chrono::hours(24 * 366));
    if (set) co_return;
  }
}

}  // namespace ember
