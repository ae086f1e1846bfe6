// Event and TaskGroup: a set() before the wait is not lost, every waiter wakes, a deadline
// passes, and a group tells when its last task is done.
#include "ember/common/async.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <optional>

namespace ember {
namespace {

namespace asio = boost::asio;
using std::chrono::milliseconds;

TEST(Event, ASetBeforeTheWaitIsNotLost) {
  asio::io_context io;
  Event event(io.get_executor());
  event.set();
  std::optional<bool> got;
  asio::co_spawn(io, event.wait_for(std::chrono::hours(1)),
                 [&](std::exception_ptr, bool r) { got = r; });
  io.run_for(milliseconds(500));
  ASSERT_TRUE(got);
  EXPECT_TRUE(*got);
}

TEST(Event, SetWakesEveryWaiterAndADeadlinePasses) {
  asio::io_context io;
  Event event(io.get_executor());
  int woken = 0;
  for (int i = 0; i < 3; ++i) {
    asio::co_spawn(io, event.wait(), [&](std::exception_ptr e) {
      EXPECT_FALSE(e);
      ++woken;
    });
  }
  std::optional<bool> timed_out;
  asio::co_spawn(io, event.wait_for(milliseconds(1)),
                 [&](std::exception_ptr, bool r) { timed_out = r; });
  io.run_for(milliseconds(50));
  ASSERT_TRUE(timed_out);
  EXPECT_FALSE(*timed_out) << "nobody set it within the deadline";
  EXPECT_EQ(woken, 0);
  asio::post(io, [&] { event.set(); });
  io.restart();
  io.run_for(milliseconds(200));
  EXPECT_EQ(woken, 3);
  event.reset();
  EXPECT_FALSE(event.is_set());
}

TEST(TaskGroup, WaitEndsWhenTheLastTokenGoes) {
  asio::io_context io;
  TaskGroup group(io.get_executor());
  std::optional<TaskGroup::Token> a(group.join());
  std::optional<TaskGroup::Token> b(group.join());
  EXPECT_EQ(group.size(), 2u);
  bool done = false;
  asio::co_spawn(io, group.wait(), [&](std::exception_ptr) { done = true; });
  io.run_for(milliseconds(20));
  EXPECT_FALSE(done);
  a.reset();
  io.restart();
  io.run_for(milliseconds(20));
  EXPECT_FALSE(done) << "one task is still in flight";
  b.reset();
  io.restart();
  io.run_for(milliseconds(200));
  EXPECT_TRUE(done);
  EXPECT_EQ(group.size(), 0u);
}

}  // namespace
}  // namespace ember
