#include "ember/events/timetable.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <nlohmann/json.hpp>

#include "ember/common/crypto.h"

namespace ember::events {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

const auto log_exception = log_escaped("events: schedule");
constexpr int64_t kRescanMs = 1'000;  // the registry is read again at least this often

// EventBridge's scheduled event, as a function written for Lambda expects it.
std::string scheduled_event(const std::string& function, const std::string& expression,
                            int64_t due_ms) {
  return json{
      {"version", "0"},
      {"id", random_uuid()},
      {"detail-type", "Scheduled Event"},
      {"source", "aws.events"},
      {"account", "000000000000"},
      {"time", format_utc(due_ms / 1000, "%Y-%m-%dT%H:%M:%SZ")},
      {"region", "us-east-1"},
      {"resources", {fmt::format("arn:aws:events:us-east-1:000000000000:rule/{}", function)}},
      {"detail", json::object()},
      {"ember", {{"schedule", expression}, {"due_ms", due_ms}}}}
      .dump();
}

}  // namespace

Timetable::Timetable(asio::io_context& io, Store& store, const registry::Registry& registry,
                     Dispatcher& dispatcher, const Clock& clock)
    : io_(io),
      store_(store),
      registry_(registry),
      dispatcher_(dispatcher),
      clock_(clock),
      timer_(io) {}

Timetable::~Timetable() { *alive_ = false; }

Status Timetable::start() {
  auto fired = store_.fire_times();
  if (!fired) return fired.error();
  last_fired_ = std::move(*fired);
  refresh();
  fire_due();
  arm();
  return {};
}

void Timetable::stop() {
  stopped_ = true;
  timer_.cancel();
}

void Timetable::poke() {
  refresh();
  fire_due();
  arm();
}

std::vector<std::pair<std::string, int64_t>> Timetable::next_fires(
    const std::string& function) const {
  std::vector<std::pair<std::string, int64_t>> out;
  for (auto it = entries_.lower_bound({function, ""});
       it != entries_.end() && it->first.first == function; ++it) {
    out.emplace_back(it->first.second, it->second.next_ms);
  }
  return out;
}

void Timetable::refresh() {
  const int64_t now = clock_.wall_ms();
  std::map<Key, Entry> next;
  for (const auto& record : registry_.list()) {
    for (const auto& expression : record->active().config.schedule) {
      Key key{record->name, expression};
      if (auto it = entries_.find(key); it != entries_.end()) {
        next.emplace(key, std::move(it->second));
        continue;
      }
      auto schedule = registry::Schedule::parse(expression);
      if (!schedule) continue;  // checked at deploy; a record from elsewhere is skipped
      Entry e{std::move(*schedule), 0, false};
      // A schedule that fired before: a fire it missed since is sent now, once.
      auto last = last_fired_.find(key);
      auto missed = last == last_fired_.end() ? std::nullopt : e.schedule.next_after(last->second);
      if (missed && *missed <= now) {
        e.next_ms = *missed;
        e.catch_up = true;
      } else if (auto n = e.schedule.next_after(now)) {
        e.next_ms = *n;
      } else {
        continue;  // it never fires again
      }
      next.emplace(std::move(key), std::move(e));
    }
  }
  entries_ = std::move(next);
}

void Timetable::fire_due() {
  if (stopped_) return;
  const int64_t now = clock_.wall_ms();
  for (auto& [key, e] : entries_) {
    if (e.next_ms > now) continue;
    const int64_t due = e.next_ms;
    if (e.catch_up) {
      spdlog::info("events: [fn={}] schedule {} missed its fire due at {}; sending it now",
                   key.first, key.second, format_utc(due / 1000, "%Y-%m-%dT%H:%M:%SZ"));
    }
    e.catch_up = false;
    // The next one after now: fires missed while this one was due are not sent again.
    auto n = e.schedule.next_after(std::max(now, due));
    e.next_ms = n ? *n : INT64_MAX;
    last_fired_[key] = due;
    asio::co_spawn(io_, fire(key.first, key.second, due), log_exception);
  }
  std::erase_if(entries_, [](const auto& entry) { return entry.second.next_ms == INT64_MAX; });
}

asio::awaitable<void> Timetable::fire(std::string function, std::string expression,
                                      int64_t due_ms) {
  // The event and the fire are committed together: after a crash the fire is either sent and
  // recorded or neither, and of several nodes firing it, one sends it.
  SendRequest request{function, "", scheduled_event(function, expression, due_ms), "schedule"};
  request.fire_expression = expression;
  request.fire_due_ms = due_ms;
  auto sent = co_await dispatcher_.send(std::move(request));
  if (!sent && sent.error().code == Errc::kConflict && sent.error().field == "fire") {
    spdlog::debug("events: [fn={}] schedule {}: another node sent this fire", function, expression);
  } else if (!sent) {
    spdlog::warn("events: [fn={}] schedule {} could not send its event: {}", function, expression,
                 sent.error().message);
  }
}

void Timetable::arm() {
  if (stopped_) return;
  const int64_t now = clock_.wall_ms();
  int64_t wake = now + kRescanMs;
  for (const auto& [_, e] : entries_) wake = std::min(wake, e.next_ms);
  timer_.expires_after(std::chrono::milliseconds(std::max<int64_t>(0, wake - now)));
  timer_.async_wait([this, alive = std::weak_ptr<bool>(alive_)](boost::system::error_code ec) {
    auto a = alive.lock();
    if (ec || !a || !*a || stopped_) return;
    poke();
  });
}

}  // namespace ember::events
