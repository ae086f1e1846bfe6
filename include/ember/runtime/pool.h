// Pre-started workers (docs/sandbox.md#pre-initialised-workers): sandboxed runtime processes that
// have loaded their shim and wait for a function, per runtime flavour (python; node by heap
// size). A start takes one when its function can use it: the sandbox binds the bundle and sets
// the limits, the worker loads the handler, and the runtime's own start-up is already paid.
// Otherwise, or when none waits, it is a cold start. The pool refills in the background, sized
// by the cold starts it saw lately. Lives on the event loop's thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <string>

#include "ember/common/clock.h"
#include "ember/runtime/cold_start.h"

namespace ember::runtime {

struct PoolOptions {
  int max_per_flavour = 4;  // workers kept waiting per flavour at most; 0: no pool
  int min_per_flavour = 1;  // kept for python and node at 128 MB from the start
  // Cold starts of a flavour within this window, each one a worker to keep (between min and max).
  std::chrono::seconds window{60};
  int max_memory_mb = 1024;  // what waiting workers may hold together (their cgroup limits)
  int worker_memory_mb = 128;
};

struct PoolStats {
  uint64_t hits = 0;    // starts served by a waiting worker
  uint64_t misses = 0;  // starts of a poolable function that found none
  int waiting = 0;      // ready and waiting now
  int starting = 0;
  int64_t memory_mb = 0;  // the cgroup limits of waiting and starting workers
};

// How many workers a flavour keeps waiting: one for each start (hit or miss) seen within the
// window, at least min_per_flavour and at most max_per_flavour; none when max_per_flavour is 0.
class PoolSizing {
 public:
  void started(Clock::time_point at) { starts_.push_back(at); }
  int target(Clock::time_point now, const PoolOptions& options);

 private:
  std::deque<Clock::time_point> starts_;  // within the window, oldest first
};

// Whether a worker of `config` can come from the pool: node or python, in a network namespace
// of its own (not "host"), and no variable read only as a process starts (LD_*, GLIBC_TUNABLES,
// MALLOC_*, OPENSSL_*, LANG, LC_*; for node also NODE_* and UV_*).
bool poolable(const registry::FunctionConfig& config);

class PooledFactory final : public InstanceFactory {
 public:
  PooledFactory(boost::asio::io_context& io, ColdStartFactory& cold, PoolOptions options,
                const Clock& clock = system_clock());
  ~PooledFactory() override;

  Result<std::shared_ptr<Instance>> start(const registry::FunctionRecord& record,
                                          worker::LogSink log) override;
  void forget(const std::string& function) override { cold_.forget(function); }
  void prepare(const registry::FunctionRecord& record) override { cold_.prepare(record); }
  int64_t reserved_memory_mb() const override;

  // Starts the workers kept from the start (min_per_flavour); a no-op without a pool.
  void fill();
  // Kills every waiting worker; starts no more.
  void stop();
  // Replaces every waiting worker (the interpreters or the shims changed).
  void flush();
  void set_options(PoolOptions options);
  PoolStats stats() const;

 private:
  struct Flavour {
    registry::Runtime runtime = registry::Runtime::kNode;
    int memory_mb = 128;  // node's heap is sized from it at start
    std::deque<std::shared_ptr<worker::Instance>> waiting;
    int starting = 0;
    PoolSizing sizing;
    // Refills once starts of the flavour pause: each start pushes it back.
    std::shared_ptr<boost::asio::steady_timer> refill_timer;
  };

  static std::string key(registry::Runtime runtime, int memory_mb);
  Flavour& flavour(registry::Runtime runtime, int memory_mb);
  int target(Flavour& f);
  // Starts workers for `f` up to its target, one at a time, each after the last is ready.
  void refill(const std::string& key);
  std::shared_ptr<worker::Instance> take(Flavour& f);
  void refill_later(const std::string& key, std::chrono::milliseconds delay);
  // The sandbox has what binding needs: namespaces and cgroups.
  bool supported() const;

  boost::asio::io_context& io_;
  ColdStartFactory& cold_;
  PoolOptions options_;
  const Clock& clock_;
  std::map<std::string, Flavour> flavours_;
  PoolStats counters_;
  bool stopped_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace ember::runtime
