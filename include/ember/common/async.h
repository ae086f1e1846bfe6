// The asynchronous idioms every module on the event loop uses, named once: the completion
// token that turns errors into values, a completion handler that logs what escaped a spawned
// task, an Event that coroutines wait on, and a TaskGroup that tells when work in flight is
// done. Not thread-safe: each object belongs to the thread that runs its executor.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <list>
#include <string>
#include <utility>

namespace ember {

// co_await op(kAwait) gives (error_code, results...) instead of throwing.
inline constexpr auto kAwait = boost::asio::as_tuple(boost::asio::use_awaitable);

// For co_spawn: logs an exception that escaped the task as "WHAT failed: ...". Nothing spawned
// may end with an exception no one sees.
std::function<void(std::exception_ptr)> log_escaped(std::string what);

// A flag coroutines can wait for. set() wakes every waiter; until reset(), waits return at
// once. Waiting for an event already set never suspends, so a set() that comes before the wait
// begins is not lost (a cancelled timer that nobody waits on yet would lose it).
class Event {
 public:
  explicit Event(boost::asio::any_io_executor executor) : executor_(std::move(executor)) {}
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  void set();
  void reset() { set_ = false; }
  bool is_set() const { return set_; }
  // True once set; false when `limit` passed first.
  boost::asio::awaitable<bool> wait_for(std::chrono::nanoseconds limit);
  boost::asio::awaitable<void> wait();

 private:
  boost::asio::any_io_executor executor_;
  bool set_ = false;
  std::list<boost::asio::steady_timer*> waiting_;
};

// Counts work in flight (calls on a function, connections of a server) and lets a coroutine
// wait until there is none.
class TaskGroup {
 public:
  explicit TaskGroup(boost::asio::any_io_executor executor) : empty_(std::move(executor)) {
    empty_.set();
  }

  // Held by a task for as long as it is in flight.
  class Token {
   public:
    explicit Token(TaskGroup& group) : group_(&group) { group_->enter(); }
    Token(Token&& other) noexcept : group_(std::exchange(other.group_, nullptr)) {}
    Token(const Token&) = delete;
    Token& operator=(const Token&) = delete;
    Token& operator=(Token&&) = delete;
    ~Token() {
      if (group_) group_->leave();
    }

   private:
    TaskGroup* group_;
  };

  Token join() { return Token(*this); }
  size_t size() const { return count_; }
  // True once nothing is in flight; false when `limit` passed first.
  boost::asio::awaitable<bool> wait_for(std::chrono::nanoseconds limit) {
    return empty_.wait_for(limit);
  }
  boost::asio::awaitable<void> wait() { return empty_.wait(); }

 private:
  void enter() {
    if (count_++ == 0) empty_.reset();
  }
  void leave() {
    if (--count_ == 0) empty_.set();
  }

  Event empty_;
  size_t count_ = 0;
};

}  // namespace ember
