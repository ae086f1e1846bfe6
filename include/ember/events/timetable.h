// Schedules: the "schedule" expressions of each function's active version fire asynchronous
// events through the dispatcher, which wake a function scaled to zero like any call. When each
// schedule last fired is stored, so a restart knows what it missed: at most one missed fire is
// sent at start (with the time it was due), then the schedule goes on from now
// (docs/events.md#schedules). Lives on the event loop's thread; time comes from a Clock.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ember/common/clock.h"
#include "ember/events/dispatcher.h"
#include "ember/events/store.h"
#include "ember/registry/registry.h"
#include "ember/registry/schedule.h"

namespace ember::events {

class Timetable {
 public:
  Timetable(boost::asio::io_context& io, Store& store, const registry::Registry& registry,
            Dispatcher& dispatcher, const Clock& clock = system_clock());
  ~Timetable();

  // Reads when each schedule last fired (blocking: call before serving) and starts firing.
  Status start();
  void stop();
  // Reads the registry again now (tests; it also does so every second).
  void poke();

  // When the schedules of `function` fire next: (expression, ms), nullopt-free (a schedule
  // that never fires again is left out).
  std::vector<std::pair<std::string, int64_t>> next_fires(const std::string& function) const;

 private:
  struct Entry {
    registry::Schedule schedule;
    int64_t next_ms = 0;
    bool catch_up = false;  // its first fire is a missed one, sent at start
  };
  using Key = std::pair<std::string, std::string>;  // (function, expression)

  void refresh();
  void fire_due();
  void arm();
  boost::asio::awaitable<void> fire(std::string function, std::string expression, int64_t due_ms);

  boost::asio::io_context& io_;
  Store& store_;
  const registry::Registry& registry_;
  Dispatcher& dispatcher_;
  const Clock& clock_;
  std::map<Key, Entry> entries_;
  std::map<Key, int64_t> last_fired_;  // as stored at start, then as fired
  boost::asio::steady_timer timer_;
  bool stopped_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace ember::events
