// One worker process serving one function version: its frames channel on fd 3, its stdout and
// stderr captured line by line, its exit watched through its pidfd. Everything runs on the
// event loop's thread; an Instance is shared by the scheduler and the calls in flight on it.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ember/common/result.h"
#include "ember/os/cgroup.h"
#include "ember/os/child_process.h"
#include "ember/os/proc_stats.h"
#include "ember/sandbox/sandbox.h"
#include "ember/worker/call.h"
#include "ember/worker/protocol.h"

namespace ember::worker {

struct LaunchSpec {
  std::string function;
  int version = 0;
  std::vector<std::string> argv;
  std::vector<std::string> env;
  std::string cwd = "/";
  int concurrency = 1;
  sandbox::WorkerSpec worker;  // how the sandbox confines it
  KvHandler kv;                // serves its key-value requests; empty: they are refused
  InvokeHandler invoke;        // serves its calls of other functions; empty: they are refused
};

class Instance : public std::enable_shared_from_this<Instance> {
 public:
  // kPooled: a pre-started worker (spec.worker.pooled) that is ready for load(), not for calls.
  enum class State { kStarting, kPooled, kReady, kStopping, kDead };

  // Starts the process; the instance is kStarting until ready() completes.
  static Result<std::shared_ptr<Instance>> launch(boost::asio::io_context& io,
                                                  sandbox::Sandbox& sandbox, LaunchSpec spec,
                                                  LogSink log);
  ~Instance();

  // Waits for READY. An init error (the handler failed to load) is Errc::kInvalid whose message
  // is the error object as JSON; a crash or the timeout is Errc::kSystem with the reason.
  boost::asio::awaitable<Status> ready(std::chrono::milliseconds timeout);

  // Gives a kPooled worker its function: `spec` (its name, version, concurrency, handlers) from
  // now on, its output to `log`. A LOAD frame with `spec.env` goes to the worker at once; while
  // the worker takes the environment in, `sandbox` binds it to the function (Sandbox::bind: its
  // limits, its bundle on /var/task), and then MOUNTED tells it to load the handler. The worker
  // is kStarting again until ready() completes; its init_duration() runs from LOAD. On an error
  // the caller kills the worker: it holds the function's environment, and is bound to no function.
  Status load(LaunchSpec spec, LogSink log, sandbox::Sandbox& sandbox);
  const os::ChildProcess& process() const { return child_; }
  os::Cgroup* cgroup() const { return cgroup_.get(); }

  // Sends one INVOKE and waits for its answer. The worker serves `concurrency` calls at once and
  // the rest in order: a call sent while the instance is full waits in the worker's channel and
  // starts when the answer of a call ahead of it arrives. A call sent while the instance is
  // kStarting waits the same way and starts at READY: a shim reads its frames in order, after its
  // init; if the worker never becomes ready, the call ends kNotStarted. `timeout` runs from the
  // call's start; past it the process is killed. `deadline_wall_ms` is what the handler's context
  // reports when the call is sent at once (the shim counts `timeout` from its own start). The
  // strings are read only until the frame is sent, before the call first suspends: a caller that
  // co_awaits it may reuse them for another call; one that spawns it keeps them until it runs.
  boost::asio::awaitable<CallResult> call(const std::string& request_id,
                                          const std::string& event_json, CallTags tags,
                                          std::chrono::nanoseconds timeout,
                                          int64_t deadline_wall_ms);

  // Asks the worker to exit (SHUTDOWN) and kills it if it is still there after `grace`.
  void stop(std::chrono::milliseconds grace);
  // Kills the process now; calls in flight end as crashes with `reason`.
  void kill(std::string reason);

  // Called once, on the event loop, when the process has exited and been reaped.
  void on_exit(std::function<void(Instance&)> fn) { on_exit_ = std::move(fn); }

  uint64_t id() const { return id_; }
  pid_t pid() const { return child_.pid(); }
  const LaunchSpec& spec() const { return spec_; }
  State state() const { return state_; }
  // False once the process was killed or exited: it must get no further calls.
  bool usable() const { return state_ == State::kReady && exit_reason_.empty(); }
  int in_flight() const { return static_cast<int>(pending_.size()); }
  // When the oldest call running now started; nullopt when none runs.
  std::optional<std::chrono::steady_clock::time_point> running_since() const;
  std::chrono::nanoseconds init_duration() const { return init_duration_; }
  // What starting this worker cost: its init_duration, plus, for a pre-started worker, the CPU
  // its launch took before it waited for load() (the pool pays that again to replace it).
  std::chrono::nanoseconds start_cost() const { return prestart_duration_ + init_duration_; }
  // Why the process ended, once it has.
  const std::string& exit_reason() const { return exit_reason_; }
  // Why the process ended, as a cause, once it has.
  ExitCause exit_cause() const { return exit_cause_; }
  // What the kernel counted in the worker's cgroup, read when it exited.
  const os::CgroupEvents& events() const { return events_; }
  // The most memory the worker has used so far; 0 without a cgroup that reports it.
  // Read from the cgroup at most every kMemoryPeakEvery: back-to-back calls share one read, and
  // a call's REPORT may show the peak as it was up to that long before it ended.
  uint64_t memory_peak() const;
  static constexpr std::chrono::milliseconds kMemoryPeakEvery{10};
  // The main threads' time of every process in the worker's cgroup (or of the worker's process
  // without one), running and waiting for a CPU; nullopt once none can be read.
  std::optional<os::SchedTimes> sched_times() const;

 private:
  struct Pending {
    boost::asio::steady_timer timer;  // the call's deadline once started; cancelled when it ends
    std::string request_id;
    int depth = 0;
    std::chrono::nanoseconds timeout{0};
    std::chrono::steady_clock::time_point sent;
    std::optional<std::chrono::steady_clock::time_point> started;
    std::optional<std::chrono::steady_clock::time_point> answered;
    std::optional<CallResult> result;
    uint32_t kv_reads = 0, kv_writes = 0;
  };

  Instance(boost::asio::io_context& io, LaunchSpec spec, LogSink log, sandbox::Worker worker,
           int channel, int out, int err);
  void start_loops();
  // Each loop holds `self`, so the instance lives until its process is gone and reaped.
  boost::asio::awaitable<void> read_frames(std::shared_ptr<Instance> self);
  boost::asio::awaitable<void> read_output(std::shared_ptr<Instance> self,
                                           boost::asio::posix::stream_descriptor& pipe,
                                           std::string stream);
  boost::asio::awaitable<void> watch_exit(std::shared_ptr<Instance> self);
  boost::asio::awaitable<void> write_frames(std::shared_ptr<Instance> self);
  void send(Frame frame);
  void send(std::string wire);
  // Writes the frame now when nothing is queued before it and the socket takes it, else queues
  // it: for a frame the worker should start on while this thread goes on with something else.
  void send_now(std::string wire);
  void handle(Frame frame);
  void handle_kv(Frame frame);
  void handle_invoke(Frame frame);
  // Sends a reply of `type` to the worker's request `id`, unless the worker is gone by then.
  std::function<void(std::string, std::string)> replier(FrameType type, uint32_t id);
  // A request's meta as a JSON object; anything else breaks the protocol and kills the worker.
  std::optional<nlohmann::json> request_meta(const Frame& frame, std::string_view what);
  // The call a KV_REQUEST or INVOKE_REQUEST names in its meta's "call", while it runs.
  Pending* running_call(const nlohmann::json& meta);
  void drain_output();
  void take_lines(std::string& buffer, std::string_view stream, bool flush_partial);
  std::string current_request() const;
  void fail_all(const std::string& reason);
  // What a call gets when the worker ended under it: a crash if it had started, else kNotStarted.
  CallResult ended(bool started, const std::string& reason) const;
  void start(Pending& p, std::chrono::steady_clock::time_point now);
  void start_queued();

  boost::asio::io_context& io_;
  LaunchSpec spec_;
  LogSink log_;
  os::ChildProcess child_;
  std::unique_ptr<os::Cgroup> cgroup_;
  std::shared_ptr<const void> lease_;
  os::CgroupEvents events_;
  uint64_t id_;
  State state_ = State::kStarting;
  bool output_drained_ = false;  // the output pipes were drained since the last channel read
  mutable uint64_t memory_peak_ = 0;
  mutable std::chrono::steady_clock::time_point memory_peak_at_{};
  boost::asio::local::stream_protocol::socket channel_;
  boost::asio::posix::stream_descriptor stdout_;
  boost::asio::posix::stream_descriptor stderr_;
  boost::asio::posix::stream_descriptor pidfd_;
  std::string stdout_buffer_, stderr_buffer_;
  FrameDecoder decoder_;
  std::deque<std::string> outbox_;
  bool writing_ = false;  // write_frames() has a write in flight
  boost::asio::steady_timer write_signal_;
  boost::asio::steady_timer ready_signal_;
  boost::asio::steady_timer kill_timer_;
  std::optional<Status> ready_result_;
  std::chrono::steady_clock::time_point started_;
  std::chrono::nanoseconds init_duration_{0};
  std::chrono::nanoseconds prestart_duration_{0};  // a pre-started worker's launch, in CPU time
  uint32_t next_call_ = 1;
  std::map<uint32_t, Pending*> pending_;
  std::deque<uint32_t> queued_;  // sent, not started: they start in this order
  int running_ = 0;              // started, not answered
  uint32_t init_kv_ops_ = 0;     // key-value requests made while the handler loaded
  int runtime_signal_ = 0;       // the signal that ended the worker's runtime child (EXITING)
  uint64_t lines_ = 0;
  std::string exit_reason_;
  ExitCause exit_cause_ = ExitCause::kExited;
  std::function<void(Instance&)> on_exit_;
};

}  // namespace ember::worker
