// A fake InstanceFactory for scheduler tests: instances are objects the test drives by hand
// (ready, answer each call, exit), and time is a FakeClock, so the scheduler's mechanics run
// on a real io_context without processes or sleeps.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "ember/common/clock.h"
#include "ember/runtime/instance_factory.h"

namespace ember::testing {

class FakeInstance final : public runtime::Instance {
 public:
  struct Call {
    std::string request_id;
    std::string event;
    std::string qualifier;
    Clock::time_point started;
    std::optional<worker::CallResult> result;
    std::unique_ptr<boost::asio::steady_timer> done;
  };

  FakeInstance(boost::asio::io_context& io, const FakeClock& clock, std::string function,
               int version)
      : io_(io),
        clock_(clock),
        function_(std::move(function)),
        version_(version),
        ready_signal_(io, boost::asio::steady_timer::time_point::max()) {}

  // ---- driven by the test ----
  void make_ready(Status status = {}) {
    const bool failed = !status;
    ready_result_ = std::move(status);
    ready_signal_.cancel();
    // A worker that took calls before READY ends after an init error, as a shim does.
    if (failed && early_calls_) exit("exited with code 1");
  }
  // Takes calls before it is ready (runtime::Instance::takes_calls_before_ready): they wait for
  // make_ready(), and end kNotStarted if it exits first.
  void set_early_calls(bool on) { early_calls_ = on; }
  // Answers the oldest unanswered call.
  void answer(worker::CallResult result) {
    for (auto& c : calls_) {
      if (!c->result) {
        c->result = std::move(result);
        c->done->cancel();
        return;
      }
    }
  }
  void answer_ok(std::string body = "\"ok\"",
                 std::chrono::nanoseconds duration = std::chrono::microseconds(100)) {
    worker::CallResult r;
    r.kind = worker::CallResult::Kind::kOk;
    r.body = std::move(body);
    r.duration = duration;
    answer(std::move(r));
  }
  // The worker ends on its own, as after a crash.
  void exit(std::string reason = "exited with code 1") {
    if (exited_) return;
    exited_ = true;
    exit_reason_ = std::move(reason);
    const bool never_ready = !ready_result_ || !*ready_result_;
    for (auto& c : calls_) {
      if (!c->result) {
        worker::CallResult r;
        r.kind = early_calls_ && never_ready ? worker::CallResult::Kind::kNotStarted
                                             : worker::CallResult::Kind::kCrash;
        r.body = "worker " + exit_reason_;
        c->result = std::move(r);
        c->done->cancel();
      }
    }
    ready_signal_.cancel();
    if (on_exit_) boost::asio::post(io_, on_exit_);
  }
  int unanswered() const {
    int n = 0;
    for (const auto& c : calls_) n += c->result ? 0 : 1;
    return n;
  }
  const std::vector<std::unique_ptr<Call>>& calls() const { return calls_; }
  bool stopped() const { return stopped_; }
  bool exited() const { return exited_; }
  const std::string& function() const { return function_; }
  int version() const { return version_; }

  // ---- runtime::Instance ----
  boost::asio::awaitable<Status> ready(std::chrono::milliseconds) override {
    if (!ready_result_ && !exited_) {
      co_await ready_signal_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    }
    if (ready_result_) co_return *ready_result_;
    co_return Error::system("start", function_, ECHILD);
  }
  bool takes_calls_before_ready() const override { return early_calls_; }
  boost::asio::awaitable<worker::CallResult> call(const std::string& request_id,
                                                  const std::string& event_json,
                                                  worker::CallTags tags, std::chrono::nanoseconds,
                                                  int64_t) override {
    auto c = std::make_unique<Call>();
    c->request_id = request_id;
    c->event = event_json;
    c->qualifier = std::string(tags.qualifier);
    c->started = clock_.now();
    c->done = std::make_unique<boost::asio::steady_timer>(
        io_, boost::asio::steady_timer::time_point::max());
    Call* call = c.get();
    calls_.push_back(std::move(c));
    if (exited_) {
      worker::CallResult r;
      r.kind = worker::CallResult::Kind::kNotStarted;
      call->result = std::move(r);
    }
    if (!call->result) {
      co_await call->done->async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    }
    worker::CallResult result = *call->result;
    if (stopped_ && unanswered() == 0) exit("stopped");
    co_return result;
  }
  void stop(std::chrono::milliseconds) override {
    stopped_ = true;
    if (unanswered() == 0) exit("stopped");
  }
  void kill(std::string reason) override {
    killed_ = true;
    exit(std::move(reason));
  }
  bool usable() const override { return !killed_ && !exited_; }
  std::optional<Clock::time_point> running_since() const override {
    std::optional<Clock::time_point> oldest;
    for (const auto& c : calls_) {
      if (!c->result && (!oldest || c->started < *oldest)) oldest = c->started;
    }
    return oldest;
  }
  std::chrono::nanoseconds init_duration() const override { return init_duration_; }
  std::chrono::nanoseconds start_cost() const override { return start_cost_; }
  std::optional<os::SchedTimes> sched_times() const override { return sched_times_; }
  // What sched_times() reports from now on.
  void set_sched_times(std::optional<os::SchedTimes> times) { sched_times_ = times; }
  // As a pre-started worker would report them: ready in `init`, having cost `cost` to start.
  void set_start_times(std::chrono::nanoseconds init, std::chrono::nanoseconds cost) {
    init_duration_ = init;
    start_cost_ = cost;
  }
  const std::string& exit_reason() const override { return exit_reason_; }
  worker::ExitCause exit_cause() const override { return worker::ExitCause::kExited; }
  const os::CgroupEvents& events() const override { return events_; }
  uint64_t memory_peak() const override { return 0; }
  void on_exit(std::function<void()> callback) override { on_exit_ = std::move(callback); }

 private:
  boost::asio::io_context& io_;
  const FakeClock& clock_;
  std::string function_;
  int version_;
  boost::asio::steady_timer ready_signal_;
  std::optional<Status> ready_result_;
  std::vector<std::unique_ptr<Call>> calls_;
  bool stopped_ = false, killed_ = false, exited_ = false, early_calls_ = false;
  std::string exit_reason_;
  os::CgroupEvents events_;
  std::function<void()> on_exit_;
  std::chrono::nanoseconds init_duration_ = std::chrono::milliseconds(5);
  std::chrono::nanoseconds start_cost_ = std::chrono::milliseconds(5);
  std::optional<os::SchedTimes> sched_times_ = os::SchedTimes{};
};

class FakeFactory final : public runtime::InstanceFactory {
 public:
  FakeFactory(boost::asio::io_context& io, const FakeClock& clock) : io_(io), clock_(clock) {}

  Result<std::shared_ptr<runtime::Instance>> start(const registry::FunctionRecord& record,
                                                   worker::LogSink) override {
    if (fail_starts_) return Error::unsupported("no instance for you");
    auto instance = std::make_shared<FakeInstance>(io_, clock_, record.name, record.active_version);
    if (start_times_) instance->set_start_times(start_times_->first, start_times_->second);
    instance->set_early_calls(early_calls_);
    if (auto_ready_) instance->make_ready();
    started_.push_back(instance);
    return std::shared_ptr<runtime::Instance>(instance);
  }
  void forget(const std::string& function) override { forgotten_.push_back(function); }
  int64_t reserved_memory_mb() const override { return reserved_mb_; }
  void set_reserved_memory_mb(int64_t mb) { reserved_mb_ = mb; }

  // Instances become ready as soon as they start (else the test calls make_ready()).
  void set_auto_ready(bool on) { auto_ready_ = on; }
  void set_fail_starts(bool on) { fail_starts_ = on; }
  // Instances started from now on take calls before they are ready (FakeInstance).
  void set_early_calls(bool on) { early_calls_ = on; }
  // What the instances started from now on report as their init_duration and start_cost.
  void set_start_times(std::chrono::nanoseconds init, std::chrono::nanoseconds cost) {
    start_times_.emplace(init, cost);
  }
  const std::vector<std::shared_ptr<FakeInstance>>& started() const { return started_; }
  std::vector<std::shared_ptr<FakeInstance>> of(const std::string& function) const {
    std::vector<std::shared_ptr<FakeInstance>> out;
    for (const auto& i : started_) {
      if (i->function() == function) out.push_back(i);
    }
    return out;
  }
  const std::vector<std::string>& forgotten() const { return forgotten_; }

 private:
  boost::asio::io_context& io_;
  const FakeClock& clock_;
  bool auto_ready_ = true;
  int64_t reserved_mb_ = 0;
  bool fail_starts_ = false;
  bool early_calls_ = false;
  std::optional<std::pair<std::chrono::nanoseconds, std::chrono::nanoseconds>> start_times_;
  std::vector<std::shared_ptr<FakeInstance>> started_;
  std::vector<std::string> forgotten_;
};

}  // namespace ember::testing
