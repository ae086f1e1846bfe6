#include "ember/events/dispatcher.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/random.h>

#include <algorithm>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "ember/common/crypto.h"
#include "ember/common/json_fields.h"

namespace ember::events {

namespace asio = boost::asio;
using nlohmann::json;
using Kind = scheduler::InvokeOutcome::Kind;

namespace {

const auto log_exception = log_escaped("events: task");

// Waits for the store to commit `event`, resuming on the caller's executor. A plain function,
// not a coroutine (see gateway/blocking.h on GCC 12 and coroutine temporaries).
asio::awaitable<Status> committed(Store& store, Event event) {
  return asio::async_initiate<const asio::use_awaitable_t<>, void(Status)>(
      [&store](auto handler, Event e) {
        using Handler = decltype(handler);
        auto work = asio::make_work_guard(asio::get_associated_executor(handler));
        auto held = std::make_shared<Handler>(std::move(handler));
        store.save(std::move(e), [held, work](Status st) mutable {
          asio::post(work.get_executor(),
                     [held, st = std::move(st)]() mutable { std::move (*held)(std::move(st)); });
        });
      },
      asio::use_awaitable, std::move(event));
}

std::string error_json(std::string_view type, std::string_view message) {
  return json{{"errorType", type}, {"errorMessage", message}}.dump(-1, ' ', false,
                                                                   json::error_handler_t::replace);
}

// The error of a failed attempt, as Lambda's runtimes report it.
std::string attempt_error(const scheduler::InvokeOutcome& o) {
  switch (o.kind) {
    case Kind::kFunctionError:
    case Kind::kInitError: {
      json body = parse_untrusted(o.body);
      if (body.is_object()) return body.dump(-1, ' ', false, json::error_handler_t::replace);
      return error_json("Runtime.Unknown", o.body);
    }
    case Kind::kTimeout:
      return error_json("Sandbox.Timedout", o.body);
    case Kind::kCrash:
      return error_json(worker::error_type(o.crash_cause.value_or(worker::ExitCause::kExited)),
                        o.body);
    default:
      return error_json("Runtime.Unknown", o.body);
  }
}

}  // namespace

Dispatcher::Dispatcher(asio::io_context& io, Store& store, const registry::Registry& registry,
                       Runner run, DispatcherOptions options, const Clock& clock)
    : io_(io),
      store_(store),
      registry_(registry),
      run_(std::move(run)),
      options_(std::move(options)),
      clock_(clock),
      timer_(io),
      alive_timer_(io),
      attempts_(std::make_shared<TaskGroup>(io.get_executor())) {
  uint64_t seed = options_.seed;
  if (seed == 0 && ::getrandom(&seed, sizeof seed, 0) != sizeof seed) seed = std::random_device{}();
  rng_.seed(seed);
}

Dispatcher::~Dispatcher() { *alive_ = false; }

Status Dispatcher::start() {
  auto pending = store_.pending();
  if (!pending) return pending.error();
  const int64_t now = clock_.wall_ms();
  size_t resumed = 0;
  for (Event& e : *pending) {
    // An attempt the daemon did not see end runs again at once: delivery is at least once. A
    // retry keeps its time.
    if (e.state == State::kRunning) e.next_ms = now;
    e.state = State::kQueued;
    hold(std::move(e));
    ++resumed;
  }
  if (resumed > 0) spdlog::info("events: resuming {} queued events", resumed);
  pump();
  if (store_.keep_alive_every().count() > 0) keep_alive();
  return {};
}

void Dispatcher::keep_alive() {
  alive_timer_.expires_after(store_.keep_alive_every());
  alive_timer_.async_wait([this,
                           alive = std::weak_ptr<bool>(alive_)](boost::system::error_code ec) {
    auto a = alive.lock();
    if (ec || !a || !*a || stopping_) return;
    const size_t room = options_.max_events > held_.size() ? options_.max_events - held_.size() : 0;
    // On the store's thread, maybe after the dispatcher is gone: only `io` and `alive` are
    // touched before the check.
    store_.keep_alive(room, [this, alive, &io = io_](Result<std::vector<Event>> taken) {
      asio::post(io, [this, alive, taken = std::move(taken)]() mutable {
        auto a = alive.lock();
        if (!a || !*a || stopping_) return;
        if (taken) {
          const int64_t now = clock_.wall_ms();
          for (Event& e : *taken) {
            // Taken back after this node had lost it: the old entry goes first.
            if (auto it = held_.find(e.id);
                it != held_.end() && it->second.lost && !it->second.running) {
              release(e.id);
            }
            // As at a restart: an attempt its node did not see end runs again at once.
            if (e.state == State::kRunning) e.next_ms = now;
            e.state = State::kQueued;
            hold(std::move(e));
          }
          if (!taken->empty()) pump();
        }
        keep_alive();
      });
    });
  });
}

void Dispatcher::hold(Event event) {
  const std::string id = event.id;
  const int64_t at = event.next_ms;
  auto [it, added] = held_.try_emplace(id, Entry{std::move(event), false});
  if (!added) return;
  bytes_ += it->second.event.bytes();
  ++functions_[it->second.event.function].held;
  queue(it->second, at);
}

namespace {

std::optional<int64_t> first_due(const std::set<std::pair<int64_t, std::string>>& ready) {
  return ready.empty() ? std::nullopt : std::optional<int64_t>(ready.begin()->first);
}

}  // namespace

void Dispatcher::queue(Entry& entry, int64_t at_ms) {
  entry.event.state = State::kQueued;
  entry.event.next_ms = at_ms;
  FunctionCounts& counts = functions_[entry.event.function];
  const auto before = first_due(counts.ready);
  counts.ready.emplace(at_ms, entry.event.id);
  reindex(entry.event.function, counts, before);
}

void Dispatcher::reindex(const std::string& function, const FunctionCounts& counts,
                         std::optional<int64_t> before) {
  const auto now = first_due(counts.ready);
  if (now == before) return;
  if (before) heads_.erase({*before, function});
  if (now) heads_.emplace(*now, function);
}

void Dispatcher::release(const std::string& id) {
  auto it = held_.find(id);
  if (it == held_.end()) return;
  const Event& e = it->second.event;
  bytes_ -= std::min<uint64_t>(bytes_, e.bytes());
  if (auto f = functions_.find(e.function); f != functions_.end()) {
    FunctionCounts& counts = f->second;
    const auto before = first_due(counts.ready);
    counts.ready.erase({e.next_ms, e.id});
    reindex(e.function, counts, before);
    if (--counts.held == 0 && counts.running == 0) functions_.erase(f);
  }
  held_.erase(it);
}

asio::awaitable<Result<std::string>> Dispatcher::send(SendRequest request) {
  const auto record = registry_.get(request.function);
  if (!record) co_return Error::not_found("function " + request.function + " does not exist");
  if (auto target = record->resolve(request.qualifier, 0); !target) co_return target.error();
  if (request.depth > options_.max_call_depth) {
    co_return Error::invalid(
        fmt::format("{} function-to-function calls led to this one, more than the {} allowed: "
                    "a loop?",
                    request.depth, options_.max_call_depth),
        "depth");
  }
  const auto& config = record->active().config;
  const auto counts = functions_.find(request.function);
  const size_t held_here = counts == functions_.end() ? 0 : counts->second.held;
  const uint64_t size = request.payload.size() + 256;
  std::string full;
  if (stopping_) {
    full = "the daemon is stopping";
  } else if (held_.size() >= options_.max_events) {
    full = fmt::format("{} events are queued, the most the daemon holds", held_.size());
  } else if (held_here >= options_.max_per_function) {
    full = fmt::format("{} events of {} are queued, the most one function may have", held_here,
                       request.function);
  } else if (bytes_ + size > options_.max_bytes) {
    full = fmt::format("queued events hold {} bytes, the most the daemon keeps", bytes_);
  }
  if (!full.empty()) {
    ++counters_.refused;
    Error e;
    e.code = Errc::kUnavailable;
    e.message = std::move(full);
    e.field = "queue";
    co_return e;
  }
  const int64_t now = clock_.wall_ms();
  Event e;
  e.id = random_uuid();
  e.function = std::move(request.function);
  e.qualifier = std::move(request.qualifier);
  e.payload = std::make_shared<const std::string>(std::move(request.payload));
  e.source = std::move(request.source);
  e.max_retries = config.async_retries;
  e.max_age_ms = int64_t{config.async_max_age_s} * 1000;
  e.on_failure = config.async_on_failure;
  e.depth = request.depth;
  e.created_ms = e.next_ms = e.updated_ms = now;
  e.fire_expression = std::move(request.fire_expression);
  e.fire_due_ms = request.fire_due_ms;
  const std::string id = e.id;
  Status saved = co_await committed(store_, e);
  if (!saved) co_return saved.error();
  // The fire is recorded with the event's first commit, and only then.
  e.fire_expression.clear();
  e.fire_due_ms = 0;
  ++counters_.accepted;
  hold(std::move(e));
  pump();
  co_return id;
}

std::optional<Event> Dispatcher::find(std::string_view id) const {
  auto it = held_.find(std::string(id));
  if (it == held_.end()) return std::nullopt;
  return it->second.event;
}

asio::awaitable<Result<size_t>> Dispatcher::redrive(std::vector<Event> dead) {
  size_t n = 0;
  for (Event& e : dead) {
    if (e.state != State::kDead || held_.contains(e.id)) continue;
    const int64_t now = clock_.wall_ms();
    e.state = State::kQueued;
    e.attempts = 0;
    e.result.clear();
    e.created_ms = e.next_ms = e.updated_ms = now;
    Status saved = co_await committed(store_, e);
    if (!saved) co_return saved.error();
    hold(std::move(e));
    ++n;
  }
  pump();
  co_return n;
}

void Dispatcher::forget(const std::string& function) {
  // Only those waiting in the queue: one that is running or ending finishes first.
  auto f = functions_.find(function);
  if (f == functions_.end()) return;
  std::vector<std::string> ids;
  for (const auto& due : f->second.ready) ids.push_back(due.second);
  for (const auto& id : ids) release(id);
}

asio::awaitable<void> Dispatcher::stop(std::chrono::milliseconds grace) {
  stopping_ = true;
  timer_.cancel();
  alive_timer_.cancel();
  co_await attempts_->wait_for(grace);
}

DispatcherStats Dispatcher::stats() const {
  DispatcherStats s = counters_;
  s.running = static_cast<size_t>(running_);
  s.queued = held_.size() - s.running;
  return s;
}

int Dispatcher::share(const std::string& function) const {
  // Asynchronous attempts take at most half of a function's instances, so synchronous callers
  // always find room (they queue behind at most that many).
  auto record = registry_.get(function);
  const int max_instances = record ? record->active().config.max_instances : 1;
  const int concurrency = record ? record->active().config.concurrency : 1;
  return std::max(1, max_instances * concurrency / 2);
}

void Dispatcher::pump() {
  if (stopping_) return;
  // An attempt may end, and pump, before co_spawn returns: the loop runs again instead.
  if (pumping_) {
    pump_again_ = true;
    return;
  }
  pumping_ = true;
  int64_t now = 0;
  do {
    pump_again_ = false;
    now = clock_.wall_ms();
    std::vector<std::string> start;
    std::map<std::string, int> shares;
    while (running_ < options_.max_in_flight) {
      // The function whose earliest event is due first and that has room: one at its share is
      // passed over (the next attempt of it to end pumps again).
      FunctionCounts* counts = nullptr;
      std::string function;
      for (auto it = heads_.begin(); it != heads_.end() && it->first <= now; ++it) {
        auto share = shares.try_emplace(it->second, 0);
        if (share.second) share.first->second = this->share(it->second);
        FunctionCounts& c = functions_.at(it->second);
        if (c.running < share.first->second) {
          counts = &c;
          function = it->second;
          break;
        }
      }
      if (!counts) break;
      const auto before = first_due(counts->ready);
      std::string id = counts->ready.begin()->second;
      counts->ready.erase(counts->ready.begin());
      reindex(function, *counts, before);
      held_.at(id).running = true;
      ++counts->running;
      ++running_;
      start.push_back(std::move(id));
    }
    for (auto& id : start) asio::co_spawn(io_, attempt(std::move(id)), log_exception);
  } while (pump_again_ && !stopping_);
  pumping_ = false;
  purge(now);
  arm(now);
}

void Dispatcher::purge(int64_t now_ms) {
  // Succeeded and failed events are kept for keep_finished, then go; a sweep at most every ten
  // minutes, on the store's own thread.
  constexpr int64_t kEvery = 600'000;
  if (now_ms - last_purge_ms_ < kEvery) return;
  last_purge_ms_ = now_ms;
  const int64_t before = now_ms - std::chrono::milliseconds(options_.keep_finished).count();
  store_.purge_finished(before, [](Status st) {
    if (!st) spdlog::error("events: purge: {}", st.error().message);
  });
}

void Dispatcher::arm(int64_t now_ms) {
  // A function whose earliest event is due already is running it, or waits for an attempt to
  // end, which pumps; the timer is for the first event that is not due yet.
  auto next = heads_.lower_bound({now_ms + 1, std::string()});
  if (next == heads_.end() || stopping_) return;
  if (timer_at_ms_ > now_ms && timer_at_ms_ <= next->first) return;  // armed early enough
  timer_at_ms_ = next->first;
  timer_.expires_after(std::chrono::milliseconds(next->first - now_ms));
  timer_.async_wait([this, alive = std::weak_ptr<bool>(alive_)](boost::system::error_code ec) {
    auto a = alive.lock();
    if (ec || !a || !*a) return;
    timer_at_ms_ = 0;
    pump();
  });
}

std::chrono::milliseconds Dispatcher::backoff(int attempts) {
  // Exponential, with "equal jitter": half the wait is fixed, half drawn, so retries of many
  // events that failed together spread out.
  const int shift = std::clamp(attempts - 1, 0, 30);
  const int64_t full =
      std::min<int64_t>(options_.retry_max.count(), options_.retry_base.count() << shift);
  std::uniform_int_distribution<int64_t> draw(0, full / 2);
  return std::chrono::milliseconds(full - full / 2 + draw(rng_));
}

void Dispatcher::save(const Event& event, bool release_after) {
  if (auto it = held_.find(event.id); it != held_.end() && it->second.lost) {
    if (!it->second.running) release(event.id);
    return;
  }
  auto done = [this, alive = std::weak_ptr<bool>(alive_), id = event.id, release_after,
               &io = io_](Status st) {
    const bool lost = !st && st.error().code == Errc::kConflict && st.error().field == "node";
    if (lost) {
      spdlog::warn("events: [id={}] another node took it over: {}", id, st.error().message);
    } else if (!st) {
      spdlog::error("events: [id={}] not saved: {}", id, st.error().message);
    }
    if (!release_after && !lost) return;
    asio::post(io, [this, alive, id, lost] {
      auto a = alive.lock();
      if (!a || !*a) return;
      if (lost) {
        lose(id);
      } else {
        release(id);
      }
    });
  };
  store_.save(event, std::move(done));
}

void Dispatcher::lose(const std::string& id) {
  auto it = held_.find(id);
  if (it == held_.end()) return;
  it->second.lost = true;
  if (!it->second.running && !it->second.finishing) release(id);
}

asio::awaitable<void> Dispatcher::attempt(std::string id) {
  const auto group = attempts_;  // destroyed after the token below
  const auto in_flight = group->join();
  Entry& entry = held_.at(id);
  Event& e = entry.event;
  const int64_t started = clock_.wall_ms();
  auto end_attempt = [&] {
    entry.running = false;
    --functions_[e.function].running;
    --running_;
  };
  // Too old to run: Lambda's EventAgeExceeded.
  if (started - e.created_ms > e.max_age_ms) {
    end_attempt();
    co_await give_up(entry, "EventAgeExceeded",
                     error_json("Ember.EventAgeExceeded",
                                fmt::format("the event was older than {} s", e.max_age_ms / 1000)));
    pump();
    co_return;
  }
  auto record = registry_.get(e.function);
  auto target = record ? record->resolve(e.qualifier, std::uniform_real_distribution<>(0, 1)(rng_))
                       : Result<registry::Target>(
                             Error::not_found("function " + e.function + " does not exist"));
  if (!target) {
    end_attempt();
    co_await give_up(entry, "ResourceNotFound",
                     error_json("ResourceNotFoundException", target.error().message));
    pump();
    co_return;
  }
  e.state = State::kRunning;
  ++e.attempts;
  e.request_id = random_uuid();
  e.updated_ms = started;
  ++counters_.attempts;
  if (e.attempts > 1) ++counters_.retries;
  if (store_.keep_alive_every().count() == 0) {
    save(e, false);
  } else {
    // Several nodes: the attempt runs only once this node's hold on the event is confirmed,
    // so an event another node took over is never run here again.
    Status held = co_await committed(store_, e);
    if (!held) {
      end_attempt();
      if (held.error().code == Errc::kConflict && held.error().field == "node") {
        spdlog::warn("events: [id={}] another node took it over: {}", id, held.error().message);
        lose(id);
      } else {
        spdlog::warn("events: [fn={} id={}] attempt not started: {}", e.function, e.id,
                     held.error().message);
        --e.attempts;
        queue(entry, clock_.wall_ms() + options_.throttled_delay.count());
      }
      pump();
      co_return;
    }
  }
  scheduler::InvokeRequest call{e.request_id, *e.payload,
                                "invoke",     e.qualifier.empty() ? 0 : target->version,
                                e.qualifier,  e.depth};
  scheduler::InvokeOutcome outcome = co_await run_(e, std::move(call));
  // The entry is still held: nothing releases an event while its attempt runs.
  end_attempt();
  const int64_t now = clock_.wall_ms();
  e.updated_ms = now;
  switch (outcome.kind) {
    case Kind::kOk:
      e.state = State::kSucceeded;
      e.result =
          outcome.body.size() <= options_.max_result_bytes
              ? (outcome.content_type.empty()
                     ? outcome.body
                     // A custom runtime's answer that is not JSON may not be UTF-8 either.
                     : json(outcome.body).dump(-1, ' ', false, json::error_handler_t::replace))
              : json{{"truncated", true}, {"bytes", outcome.body.size()}}.dump();
      ++counters_.succeeded;
      save(e, true);
      break;
    case Kind::kThrottled:
    case Kind::kUnavailable:
      // No room, or the daemon is stopping: not an attempt of the event's own.
      --e.attempts;
      queue(entry, now + options_.throttled_delay.count());
      save(e, false);
      break;
    case Kind::kNotFound:
      co_await give_up(entry, "ResourceNotFound",
                       error_json("ResourceNotFoundException", outcome.body));
      break;
    default: {
      std::string error = attempt_error(outcome);
      const auto wait = backoff(e.attempts);
      if (e.attempts > e.max_retries) {
        co_await give_up(entry, "RetriesExhausted", std::move(error));
      } else if (now + wait.count() - e.created_ms > e.max_age_ms) {
        co_await give_up(entry, "EventAgeExceeded", std::move(error));
      } else {
        spdlog::debug("events: [fn={} id={}] attempt {} failed; next in {} ms", e.function, e.id,
                      e.attempts, wait.count());
        e.result = std::move(error);
        queue(entry, now + wait.count());
        save(e, false);
      }
      break;
    }
  }
  pump();
}

asio::awaitable<void> Dispatcher::give_up(Entry& entry, std::string condition, std::string error) {
  Event& e = entry.event;
  // Held until its last save below, even if another node takes it over meanwhile.
  entry.finishing = true;
  e.result = std::move(error);
  e.updated_ms = clock_.wall_ms();
  const std::string prefix = "function:";
  if (e.on_failure.starts_with(prefix)) {
    // Lambda's destination record: what was sent, what came back, and why it stopped.
    json record{{"version", "1.0"},
                {"timestamp", format_utc(e.updated_ms / 1000, "%Y-%m-%dT%H:%M:%SZ")},
                {"requestContext",
                 {{"requestId", e.id},
                  {"functionArn",
                   fmt::format("arn:aws:lambda:us-east-1:000000000000:function:{}", e.function)},
                  {"condition", condition},
                  {"approximateInvokeCount", e.attempts}}},
                {"requestPayload", json_or_string(*e.payload)},
                {"responseContext", {{"statusCode", 200}, {"functionError", "Unhandled"}}},
                {"responsePayload", json_or_string(e.result)}};
    SendRequest onward{e.on_failure.substr(prefix.size()), "",
                       record.dump(-1, ' ', false, json::error_handler_t::replace),
                       "function:" + e.function, e.depth + 1};
    auto sent = co_await send(std::move(onward));
    entry.finishing = false;
    if (sent) {
      e.state = State::kFailed;
      ++counters_.failed;
      save(e, true);
      co_return;
    }
    spdlog::warn("events: [fn={} id={}] cannot go to {}: {}; it is a dead letter", e.function, e.id,
                 e.on_failure, sent.error().message);
  }
  entry.finishing = false;
  spdlog::info("events: [fn={} id={}] dead after {} attempts ({})", e.function, e.id, e.attempts,
               condition);
  e.state = State::kDead;
  ++counters_.dead;
  save(e, true);
}

}  // namespace ember::events
