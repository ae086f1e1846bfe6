// A worker process as the scheduler sees it: the runtime's Instance interface over a
// worker::Instance, whichever way the worker was made (cold start or the pool of pre-started
// ones).
#pragma once

#include <memory>

#include "ember/runtime/instance_factory.h"
#include "ember/worker/instance.h"

namespace ember::runtime {

class ProcessInstance final : public Instance {
 public:
  // `early_calls`: the worker runs a shim of Ember's own, which reads a call sent before READY
  // once its init is done (takes_calls_before_ready).
  ProcessInstance(std::shared_ptr<worker::Instance> worker, bool early_calls)
      : worker_(std::move(worker)), early_calls_(early_calls) {}
  ~ProcessInstance() override { worker_->on_exit(nullptr); }

  boost::asio::awaitable<Status> ready(std::chrono::milliseconds timeout) override {
    return worker_->ready(timeout);
  }
  bool takes_calls_before_ready() const override { return early_calls_; }
  boost::asio::awaitable<worker::CallResult> call(const std::string& request_id,
                                                  const std::string& event_json,
                                                  worker::CallTags tags,
                                                  std::chrono::nanoseconds timeout,
                                                  int64_t deadline_wall_ms) override {
    return worker_->call(request_id, event_json, tags, timeout, deadline_wall_ms);
  }
  void stop(std::chrono::milliseconds grace) override { worker_->stop(grace); }
  void kill(std::string reason) override { worker_->kill(std::move(reason)); }
  bool usable() const override { return worker_->usable(); }
  std::optional<Clock::time_point> running_since() const override {
    return worker_->running_since();
  }
  std::chrono::nanoseconds init_duration() const override { return worker_->init_duration(); }
  std::chrono::nanoseconds start_cost() const override { return worker_->start_cost(); }
  const std::string& exit_reason() const override { return worker_->exit_reason(); }
  worker::ExitCause exit_cause() const override { return worker_->exit_cause(); }
  const os::CgroupEvents& events() const override { return worker_->events(); }
  uint64_t memory_peak() const override { return worker_->memory_peak(); }
  std::optional<os::SchedTimes> sched_times() const override { return worker_->sched_times(); }
  void on_exit(std::function<void()> callback) override {
    worker_->on_exit([callback = std::move(callback)](worker::Instance&) {
      if (callback) callback();
    });
  }

 private:
  std::shared_ptr<worker::Instance> worker_;
  bool early_calls_;
};

}  // namespace ember::runtime
