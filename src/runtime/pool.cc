#include "ember/runtime/pool.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>

#include "process_instance.h"

namespace ember::runtime {

namespace asio = boost::asio;

namespace {

constexpr std::chrono::milliseconds kReadyTimeout{10'000};
constexpr std::chrono::milliseconds kRefillDelay{50};
constexpr std::chrono::milliseconds kRetryDelay{1000};

// Lines a waiting worker prints before it has a function: the shim's own, if anything.
worker::LogSink pool_log(std::string flavour) {
  return
      [flavour = std::move(flavour)](std::string_view stream, std::string_view, std::string text) {
        spdlog::debug("pool: [{}] {}: {}", flavour, stream, text);
      };
}

}  // namespace

bool poolable(const registry::FunctionConfig& config) {
  if (config.runtime == registry::Runtime::kProvided || config.network == "host") return false;
  return !reads_env_at_process_start(config);
}

PooledFactory::PooledFactory(asio::io_context& io, ColdStartFactory& cold, PoolOptions options,
                             const Clock& clock)
    : io_(io), cold_(cold), options_(options), clock_(clock) {}

PooledFactory::~PooledFactory() {
  *alive_ = false;
  stop();
}

std::string PooledFactory::key(registry::Runtime runtime, int memory_mb) {
  // Python's command line is the same whatever the memory; node's heap limit is not.
  return runtime == registry::Runtime::kNode ? fmt::format("node-{}", memory_mb) : "python";
}

PooledFactory::Flavour& PooledFactory::flavour(registry::Runtime runtime, int memory_mb) {
  auto [it, added] = flavours_.try_emplace(key(runtime, memory_mb));
  if (added) {
    it->second.runtime = runtime;
    it->second.memory_mb = memory_mb;
  }
  return it->second;
}

int PoolSizing::target(Clock::time_point now, const PoolOptions& options) {
  if (options.max_per_flavour <= 0) return 0;
  while (!starts_.empty() && starts_.front() < now - options.window) starts_.pop_front();
  const int wanted = static_cast<int>(starts_.size());
  const int least = std::clamp(options.min_per_flavour, 0, options.max_per_flavour);
  return std::clamp(wanted, least, options.max_per_flavour);
}

int PooledFactory::target(Flavour& f) {
  return stopped_ ? 0 : f.sizing.target(clock_.now(), options_);
}

bool PooledFactory::supported() const {
  // Binding needs a mount namespace, and a limit that can be changed after the start: a cgroup.
  const auto& layers = cold_.sandbox().layers();
  return layers.namespaces && !layers.cgroups.empty();
}

void PooledFactory::fill() {
  if (options_.max_per_flavour <= 0 || options_.min_per_flavour <= 0) return;
  if (!supported()) {
    spdlog::info("pool: off: pre-initialised workers need the namespace and cgroup layers");
    return;
  }
  flavour(registry::Runtime::kNode, 128);
  flavour(registry::Runtime::kPython, 128);
  for (const auto& [k, _] : flavours_) refill(k);
}

void PooledFactory::stop() {
  stopped_ = true;
  for (auto& [_, f] : flavours_) {
    if (f.refill_timer) f.refill_timer->cancel();
    for (auto& w : f.waiting) {
      w->on_exit(nullptr);
      w->kill("the pool is stopping");
    }
    f.waiting.clear();
  }
}

void PooledFactory::set_options(PoolOptions options) {
  options_ = options;
  for (auto& [_, f] : flavours_) {
    while (static_cast<int>(f.waiting.size()) > target(f)) {
      f.waiting.front()->on_exit(nullptr);
      f.waiting.front()->stop(std::chrono::milliseconds(1000));
      f.waiting.pop_front();
    }
  }
  for (const auto& [k, _] : flavours_) refill(k);
}

int64_t PooledFactory::reserved_memory_mb() const {
  int64_t workers = 0;
  for (const auto& [_, f] : flavours_)
    workers += static_cast<int64_t>(f.waiting.size()) + f.starting;
  return workers * options_.worker_memory_mb;
}

PoolStats PooledFactory::stats() const {
  PoolStats s = counters_;
  for (const auto& [_, f] : flavours_) {
    s.waiting += static_cast<int>(f.waiting.size());
    s.starting += f.starting;
  }
  s.memory_mb = reserved_memory_mb();
  return s;
}

std::shared_ptr<worker::Instance> PooledFactory::take(Flavour& f) {
  while (!f.waiting.empty()) {
    auto w = std::move(f.waiting.front());
    f.waiting.pop_front();
    // One that ended a moment ago may not have been seen to end yet: its pidfd tells.
    if (w->state() == worker::Instance::State::kPooled && w->exit_reason().empty() &&
        !w->process().exited()) {
      w->on_exit(nullptr);  // the scheduler watches it from here
      return w;
    }
  }
  return nullptr;
}

void PooledFactory::refill_later(const std::string& k, std::chrono::milliseconds delay) {
  auto it = flavours_.find(k);
  if (it == flavours_.end() || stopped_) return;
  Flavour& f = it->second;
  if (!f.refill_timer) f.refill_timer = std::make_shared<asio::steady_timer>(io_);
  f.refill_timer->expires_after(delay);
  f.refill_timer->async_wait(
      [this, alive = std::weak_ptr<bool>(alive_), k](boost::system::error_code ec) {
        if (auto a = alive.lock(); !ec && a && *a) refill(k);
      });
}

void PooledFactory::flush() {
  for (auto& [_, f] : flavours_) {
    for (auto& w : f.waiting) {
      w->on_exit(nullptr);
      w->stop(std::chrono::milliseconds(1000));
    }
    f.waiting.clear();
  }
  for (const auto& [k, _] : flavours_) refill(k);
}

void PooledFactory::refill(const std::string& k) {
  auto it = flavours_.find(k);
  if (it == flavours_.end()) return;
  Flavour& f = it->second;
  // Workers that ended while they waited are no longer counted.
  std::erase_if(f.waiting, [](const std::shared_ptr<worker::Instance>& w) {
    return w->state() != worker::Instance::State::kPooled || !w->exit_reason().empty();
  });
  const int have = static_cast<int>(f.waiting.size()) + f.starting;
  if (have >= target(f) || f.starting > 0) return;
  if (reserved_memory_mb() + options_.worker_memory_mb > options_.max_memory_mb) return;
  worker::LaunchSpec spec = cold_.pooled(f.runtime, f.memory_mb);
  spec.worker.memory_mb = options_.worker_memory_mb;
  auto launched = worker::Instance::launch(io_, cold_.sandbox(), std::move(spec), pool_log(k));
  if (!launched) {
    spdlog::warn("pool: [{}] cannot start a worker: {}", k, launched.error().message);
    return;
  }
  ++f.starting;
  asio::co_spawn(
      io_,
      [this, alive = alive_, k, w = std::move(*launched)]() -> asio::awaitable<void> {
        Status ready = co_await w->ready(kReadyTimeout);
        if (!*alive) {
          w->kill("the pool is gone");
          co_return;
        }
        auto found = flavours_.find(k);
        if (found == flavours_.end()) co_return;
        Flavour& f = found->second;
        --f.starting;
        if (!ready || w->state() != worker::Instance::State::kPooled) {
          spdlog::warn("pool: [{}] a worker did not start: {}", k,
                       ready ? std::string("it ended") : ready.error().message);
          w->kill("did not start");
          refill_later(k, kRetryDelay);
          co_return;
        }
        if (stopped_ || static_cast<int>(f.waiting.size()) >= target(f)) {
          w->stop(std::chrono::milliseconds(1000));  // no longer wanted (a reload lowered it)
          co_return;
        }
        // One that ends while it waits is replaced, later.
        w->on_exit([this, alive = std::weak_ptr<bool>(alive_), k](worker::Instance&) {
          if (auto a = alive.lock(); a && *a) refill_later(k, kRetryDelay);
        });
        f.waiting.push_back(w);
        refill(k);
      },
      asio::detached);
}

Result<std::shared_ptr<Instance>> PooledFactory::start(const registry::FunctionRecord& record,
                                                       worker::LogSink log) {
  const auto& config = record.active().config;
  if (options_.max_per_flavour <= 0 || stopped_ || !poolable(config) || !supported()) {
    return cold_.start(record, std::move(log));
  }
  Flavour& f = flavour(config.runtime, config.memory_mb);
  const std::string k = key(config.runtime, config.memory_mb);
  f.sizing.started(clock_.now());
  auto pooled = take(f);
  // Refilled once the starts of this flavour pause: starting a worker holds the event loop
  // while the spawner builds its sandbox and takes CPU from the starts of a burst, and the worker
  // taken now should load its function and answer first.
  refill_later(k, kRefillDelay);
  if (!pooled) {
    ++counters_.misses;
    return cold_.start(record, std::move(log));
  }
  auto spec = cold_.function_spec(record);
  if (!spec) {
    pooled->kill("not used");
    return spec.error();
  }
  if (config.runtime == registry::Runtime::kPython) cold_.compile_bytecode(*spec);
  Status bound = pooled->load(std::move(*spec), log, cold_.sandbox());
  if (!bound) {
    spdlog::warn("pool: [fn={}] a waiting worker could not take the function ({}); cold start",
                 record.name, bound.error().message);
    pooled->kill("could not be bound");
    ++counters_.misses;
    return cold_.start(record, std::move(log));
  }
  ++counters_.hits;
  return std::shared_ptr<Instance>(std::make_shared<ProcessInstance>(std::move(pooled), true));
}

}  // namespace ember::runtime
