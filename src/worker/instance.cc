#include "ember/worker/instance.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <nlohmann/json.hpp>

#include "ember/common/async.h"
#include "ember/common/json_fields.h"

namespace ember::worker {

namespace asio = boost::asio;
using std::chrono::steady_clock;

namespace {

constexpr size_t kMaxLineBytes = 16 * 1024;
std::atomic<uint64_t> g_next_instance{1};

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

const auto log_exception = log_escaped("worker: instance loop");

// A worker's media type for a header, or application/octet-stream when it is not one: a
// worker is untrusted, and a CR or LF here would split the response.
std::string media_type(std::string_view type) {
  bool ok = !type.empty() && type.size() <= 256;
  for (unsigned char c : type) ok = ok && c >= 0x20 && c < 0x7f;
  return ok ? std::string(type) : std::string("application/octet-stream");
}

// A request whose meta's "call" is absent or 0: made while the handler loads.
bool names_no_call(const nlohmann::json& meta) {
  auto it = meta.find("call");
  return it == meta.end() || (it->is_number_unsigned() && it->get<uint64_t>() == 0);
}

}  // namespace

Result<std::shared_ptr<Instance>> Instance::launch(asio::io_context& io, sandbox::Sandbox& sandbox,
                                                   LaunchSpec spec, LogSink log) {
  int sv[2], out[2], err[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return Error::system("socketpair", spec.function, errno);
  }
  if (::pipe2(out, O_CLOEXEC) != 0) {
    int e = errno;
    ::close(sv[0]);
    ::close(sv[1]);
    return Error::system("pipe", spec.function, e);
  }
  if (::pipe2(err, O_CLOEXEC) != 0) {
    int e = errno;
    for (int fd : {sv[0], sv[1], out[0], out[1]}) ::close(fd);
    return Error::system("pipe", spec.function, e);
  }
  sandbox::SpawnRequest req;
  req.argv = spec.argv;
  req.env = spec.env;
  req.cwd = spec.cwd;
  req.fds = {-1, out[1], err[1], sv[1]};
  auto child = sandbox.spawn(std::move(req), spec.worker);
  for (int fd : {sv[1], out[1], err[1]}) ::close(fd);
  if (!child) {
    for (int fd : {sv[0], out[0], err[0]}) ::close(fd);
    return std::move(child).error();
  }
  for (int fd : {out[0], err[0]}) set_nonblocking(fd);
  std::shared_ptr<Instance> instance(
      new Instance(io, std::move(spec), std::move(log), std::move(*child), sv[0], out[0], err[0]));
  instance->start_loops();
  return instance;
}

Instance::Instance(asio::io_context& io, LaunchSpec spec, LogSink log, sandbox::Worker worker,
                   int channel, int out, int err)
    : io_(io),
      spec_(std::move(spec)),
      log_(std::move(log)),
      child_(std::move(worker.process)),
      cgroup_(std::move(worker.cgroup)),
      lease_(std::move(worker.lease)),
      id_(g_next_instance++),
      channel_(io, asio::local::stream_protocol(), channel),
      stdout_(io, out),
      stderr_(io, err),
      pidfd_(io, ::dup(child_.pidfd())),
      write_signal_(io, steady_clock::time_point::max()),
      ready_signal_(io),
      kill_timer_(io),
      started_(steady_clock::now()) {}

Instance::~Instance() = default;

void Instance::start_loops() {
  auto self = shared_from_this();
  asio::co_spawn(io_, read_frames(self), log_exception);
  asio::co_spawn(io_, read_output(self, stdout_, "stdout"), log_exception);
  asio::co_spawn(io_, read_output(self, stderr_, "stderr"), log_exception);
  asio::co_spawn(io_, write_frames(self), log_exception);
  asio::co_spawn(io_, watch_exit(self), log_exception);
}

asio::awaitable<void> Instance::read_frames(
    std::shared_ptr<Instance> /*self: keeps the instance alive*/) {
  std::vector<char> buf(64 * 1024);
  while (true) {
    auto [ec, n] = co_await channel_.async_read_some(asio::buffer(buf), kAwait);
    if (ec) break;
    decoder_.feed(std::string_view(buf.data(), n));
    output_drained_ = false;  // once per read, at its first answer (handle)
    while (true) {
      auto frame = decoder_.next();
      if (!frame) {
        kill(frame.error().message);
        co_return;
      }
      if (!frame->has_value()) break;
      handle(std::move(**frame));
    }
  }
  // End of the channel: the worker is exiting; watch_exit reports why.
}

void Instance::handle(Frame frame) {
  switch (frame.type) {
    case FrameType::kReady:
      if (state_ == State::kStarting) {
        // A pre-started worker's first READY says it waits for LOAD.
        state_ = spec_.worker.pooled ? State::kPooled : State::kReady;
        init_duration_ = steady_clock::now() - started_;
        if (state_ == State::kPooled) {
          // What its start cost is the CPU it took: it started at the lowest CPU weight, so its
          // wall time says more about the load then than about the start (CPU time unknown:
          // wall). Read now, while it waits, not when a call is waiting for it.
          const auto cpu = sched_times();
          prestart_duration_ = cpu ? std::min(init_duration_, cpu->on_cpu) : init_duration_;
        }
        ready_result_ = Status{};
        ready_signal_.cancel();
        start_queued();  // calls sent before READY (a no-op while the worker waits for LOAD)
      }
      return;
    case FrameType::kInitError:
      if (!ready_result_) {
        ready_result_ = Error::invalid(frame.meta);
        ready_signal_.cancel();
      }
      return;
    case FrameType::kResult:
    case FrameType::kError: {
      auto it = pending_.find(frame.id);
      if (it == pending_.end() || it->second->result) return;  // timed out, or answered twice
      // Lines the handler printed before answering are in the pipes now; read them under this
      // call's request id before the call completes. The answers that came in the same read
      // were all written after their lines: one drain serves them all.
      if (!output_drained_) {
        drain_output();
        output_drained_ = true;
      }
      Pending& p = *it->second;
      const auto now = steady_clock::now();
      if (p.started) {
        --running_;
      } else {  // answered before its turn: a shim that does not queue; it took no time
        std::erase(queued_, frame.id);
        p.started = now;
      }
      p.answered = now;
      p.result = CallResult{
          frame.type == FrameType::kResult ? CallResult::Kind::kOk
                                           : CallResult::Kind::kFunctionError,
          frame.type == FrameType::kResult ? std::move(frame.body) : std::move(frame.meta)};
      // A RESULT's meta is "{}" but for a body that is not JSON, which names its media type.
      if (frame.type == FrameType::kResult && frame.meta.size() > 2) {
        auto meta = parse_untrusted(frame.meta);
        if (auto it = meta.find("contentType");
            meta.is_object() && it != meta.end() && it->is_string()) {
          p.result->content_type = media_type(it->get<std::string>());
        }
      }
      p.timer.cancel();
      start_queued();
      return;
    }
    case FrameType::kKvRequest:
      handle_kv(std::move(frame));
      return;
    case FrameType::kInvokeRequest:
      handle_invoke(std::move(frame));
      return;
    case FrameType::kExiting: {
      auto meta = parse_untrusted(frame.meta);
      if (auto it = meta.find("signal");
          meta.is_object() && it != meta.end() && it->is_number_integer()) {
        runtime_signal_ = it->get<int>();
      }
      return;
    }
    default:
      kill(fmt::format("worker protocol: unexpected frame type {}",
                       static_cast<uint32_t>(frame.type)));
  }
}

void Instance::handle_kv(Frame frame) {
  KvReply reply = replier(FrameType::kKvReply, frame.id);
  const auto parsed = request_meta(frame, "a KV_REQUEST");
  if (!parsed) return;
  const nlohmann::json& meta = *parsed;
  if (!spec_.kv) {
    reply(R"({"ok":false,"errorType":"KvUnavailable",)"
          R"("errorMessage":"this worker has no key-value service"})",
          {});
    return;
  }
  // `call` names the INVOKE the request is made for; absent or 0 while the handler loads.
  Pending* call = running_call(meta);
  std::optional<uint32_t> ops;
  if (call) {
    ops = call->kv_reads + call->kv_writes;
  } else if (state_ == State::kStarting && names_no_call(meta)) {
    ops = init_kv_ops_;
  }
  const KvCount counted = spec_.kv(meta, std::move(frame.body), ops, std::move(reply));
  if (counted == KvCount::kNone) return;
  if (!call) {
    ++init_kv_ops_;
  } else if (counted == KvCount::kRead) {
    ++call->kv_reads;
  } else {
    ++call->kv_writes;
  }
}

std::function<void(std::string, std::string)> Instance::replier(FrameType type, uint32_t id) {
  return [weak = weak_from_this(), type, id](std::string meta, std::string body) {
    auto self = weak.lock();
    if (self && self->state_ != State::kDead) self->send(encode(type, id, meta, body));
  };
}

std::optional<nlohmann::json> Instance::request_meta(const Frame& frame, std::string_view what) {
  auto meta = parse_untrusted(frame.meta);
  if (meta.is_object()) return meta;
  kill(fmt::format("worker protocol: {}'s meta is not a JSON object", what));
  return std::nullopt;
}

Instance::Pending* Instance::running_call(const nlohmann::json& meta) {
  auto it = meta.find("call");
  if (it == meta.end() || !it->is_number_unsigned()) return nullptr;
  const uint64_t id = it->get<uint64_t>();
  if (id == 0 || id > UINT32_MAX) return nullptr;
  auto found = pending_.find(static_cast<uint32_t>(id));
  return found != pending_.end() && !found->second->result ? found->second : nullptr;
}

void Instance::handle_invoke(Frame frame) {
  InvokeReply reply = replier(FrameType::kInvokeReply, frame.id);
  const auto parsed = request_meta(frame, "an INVOKE_REQUEST");
  if (!parsed) return;
  const nlohmann::json& meta = *parsed;
  auto refuse = [&](std::string_view type, std::string_view message) {
    reply(nlohmann::json{{"ok", false}, {"errorType", type}, {"errorMessage", message}}.dump(), {});
  };
  if (!spec_.invoke) {
    refuse("ServiceException", "this worker cannot call other functions");
    return;
  }
  // Only a call in progress may make one: its depth is what bounds chains of calls.
  const Pending* call = running_call(meta);
  if (!call) {
    refuse("InvalidRequestContentException",
           "a function can call another only while it handles a call of its own");
    return;
  }
  spec_.invoke(CallOrigin{spec_.function, spec_.version, call->request_id, call->depth}, meta,
               std::move(frame.body), std::move(reply));
}

asio::awaitable<void> Instance::read_output(std::shared_ptr<Instance> /*self*/,
                                            asio::posix::stream_descriptor& pipe,
                                            std::string stream) {
  std::string& buffer = &pipe == &stdout_ ? stdout_buffer_ : stderr_buffer_;
  std::vector<char> buf(16 * 1024);
  while (true) {
    auto [ec, n] = co_await pipe.async_read_some(asio::buffer(buf), kAwait);
    if (ec) break;
    buffer.append(buf.data(), n);
    take_lines(buffer, stream, false);
  }
  take_lines(buffer, stream, true);
}

void Instance::drain_output() {
  // One poll says which pipe holds anything: a call that printed nothing, the usual case on the
  // warm path, costs one system call here, not a read of each pipe.
  std::array<pollfd, 2> fds{};
  std::array<boost::asio::posix::stream_descriptor*, 2> pipes{&stdout_, &stderr_};
  for (size_t i = 0; i < pipes.size(); ++i) {
    fds[i].fd = pipes[i]->is_open() ? pipes[i]->native_handle() : -1;
    fds[i].events = POLLIN;
  }
  if (::poll(fds.data(), fds.size(), 0) <= 0) return;
  char buf[16 * 1024];
  for (size_t i = 0; i < pipes.size(); ++i) {
    if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP)) == 0) continue;
    std::string& buffer = i == 0 ? stdout_buffer_ : stderr_buffer_;
    while (true) {
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) break;
      buffer.append(buf, static_cast<size_t>(n));
    }
    take_lines(buffer, i == 0 ? "stdout" : "stderr", false);
  }
}

void Instance::take_lines(std::string& buffer, std::string_view stream, bool flush_partial) {
  const std::string request = current_request();
  size_t start = 0;
  while (true) {
    size_t nl = buffer.find('\n', start);
    if (nl == std::string::npos) break;
    size_t length = nl - start;
    // Over-long lines are cut into pieces, so one line never holds more than kMaxLineBytes.
    for (size_t off = 0; off < length || off == 0; off += kMaxLineBytes) {
      ++lines_;
      log_(stream, request, buffer.substr(start + off, std::min(kMaxLineBytes, length - off)));
      if (length == 0) break;
    }
    start = nl + 1;
  }
  buffer.erase(0, start);
  while (buffer.size() >= kMaxLineBytes) {
    ++lines_;
    log_(stream, request, buffer.substr(0, kMaxLineBytes));
    buffer.erase(0, kMaxLineBytes);
  }
  if (flush_partial && !buffer.empty()) {
    ++lines_;
    log_(stream, request, std::move(buffer));
    buffer.clear();
  }
}

std::string Instance::current_request() const {
  // With one call running every line is that call's. With several, or with a call queued behind
  // it (the worker starts that one as soon as it has written the answer ahead of it, possibly
  // before this process has read that answer), lines cannot be told apart.
  if (running_ != 1 || !queued_.empty()) return {};
  for (const auto& [_, p] : pending_) {
    if (p->started && !p->result) return p->request_id;
  }
  return {};
}

asio::awaitable<void> Instance::write_frames(
    std::shared_ptr<Instance> /*self: keeps the instance alive*/) {
  while (state_ != State::kDead) {
    if (outbox_.empty()) {
      write_signal_.expires_at(steady_clock::time_point::max());
      co_await write_signal_.async_wait(kAwait);
      continue;
    }
    // Everything queued goes in one gathered write: a burst of replies costs one system call
    // and one wake-up of the worker.
    std::vector<std::string> sending(std::make_move_iterator(outbox_.begin()),
                                     std::make_move_iterator(outbox_.end()));
    outbox_.clear();
    std::vector<asio::const_buffer> buffers;
    buffers.reserve(sending.size());
    for (const auto& frame : sending) buffers.emplace_back(asio::buffer(frame));
    writing_ = true;
    auto [ec, n] = co_await asio::async_write(channel_, buffers, kAwait);
    writing_ = false;
    if (ec) break;
  }
}

void Instance::send(Frame frame) { send(encode(frame)); }

void Instance::send(std::string wire) {
  outbox_.push_back(std::move(wire));
  write_signal_.cancel();
}

void Instance::send_now(std::string wire) {
  if (!writing_ && outbox_.empty()) {
    const ssize_t n =
        ::send(channel_.native_handle(), wire.data(), wire.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n == static_cast<ssize_t>(wire.size())) return;
    // Full, or the worker is gone (its exit is reported apart): the writer takes what is left.
    if (n > 0) wire.erase(0, static_cast<size_t>(n));
  }
  send(std::move(wire));
}

asio::awaitable<void> Instance::watch_exit(
    std::shared_ptr<Instance> /*self: keeps the instance alive*/) {
  co_await pidfd_.async_wait(asio::posix::stream_descriptor::wait_read, kAwait);
  auto status = child_.wait();  // the pidfd is readable: this does not block
  if (cgroup_) {
    events_ = cgroup_->events();
    memory_peak_ = std::max(memory_peak_, events_.memory_peak);
    cgroup_.reset();  // kills whatever the worker left behind and removes the cgroup
  }
  // What the kernel did to it says more than any reason the daemon had for killing it.
  if (events_.oom_kills > 0) {
    exit_cause_ = ExitCause::kOutOfMemory;
    exit_reason_ = fmt::format("was killed at its memory limit of {} MB (OutOfMemory)",
                               spec_.worker.memory_mb);
  } else if ((status && status->signaled && status->code == SIGSYS) || runtime_signal_ == SIGSYS) {
    exit_cause_ = ExitCause::kSandboxViolation;
    exit_reason_ =
        "was killed for a system call the sandbox forbids (SandboxViolation, SIGSYS); "
        "docs/sandbox.md lists them";
  } else if (exit_reason_.empty()) {
    exit_reason_ = status ? status->describe() : status.error().message;
  }
  state_ = State::kDead;
  drain_output();
  take_lines(stdout_buffer_, "stdout", true);
  take_lines(stderr_buffer_, "stderr", true);
  fail_all(exit_reason_);
  if (!ready_result_) {
    ready_result_ = Error{Errc::kSystem, "worker " + exit_reason_ + " before it was ready"};
    ready_signal_.cancel();
  }
  boost::system::error_code ignored;
  // Descendants of the worker may still hold the pipes; the instance is done with them.
  stdout_.close(ignored);
  stderr_.close(ignored);
  channel_.close(ignored);
  pidfd_.close(ignored);
  kill_timer_.cancel();
  write_signal_.cancel();
  if (on_exit_) on_exit_(*this);
}

void Instance::fail_all(const std::string& reason) {
  for (auto& [_, p] : pending_) {
    if (!p->result) p->result = ended(p->started.has_value(), reason);
    p->timer.cancel();
  }
  queued_.clear();
  running_ = 0;
}

CallResult Instance::ended(bool started, const std::string& reason) const {
  CallResult r;
  r.body = "worker " + reason;
  if (started) {
    r.kind = CallResult::Kind::kCrash;
    r.cause = exit_cause_;
  } else {
    r.kind = CallResult::Kind::kNotStarted;
  }
  return r;
}

std::optional<steady_clock::time_point> Instance::running_since() const {
  std::optional<steady_clock::time_point> oldest;
  for (const auto& [_, p] : pending_) {
    if (p->started && !p->result && (!oldest || *p->started < *oldest)) oldest = p->started;
  }
  return oldest;
}

void Instance::start(Pending& p, steady_clock::time_point now) {
  p.started = now;
  ++running_;
  p.timer.expires_at(now + p.timeout);  // wakes a queued call's wait, which then waits again
}

void Instance::start_queued() {
  while (running_ < std::max(1, spec_.concurrency) && !queued_.empty() && usable()) {
    const uint32_t id = queued_.front();
    queued_.pop_front();
    if (auto it = pending_.find(id); it != pending_.end()) start(*it->second, steady_clock::now());
  }
}

asio::awaitable<Status> Instance::ready(std::chrono::milliseconds timeout) {
  auto self = shared_from_this();
  if (!ready_result_) {
    ready_signal_.expires_after(timeout);
    co_await ready_signal_.async_wait(kAwait);
  }
  if (!ready_result_) {
    kill(fmt::format("was not ready within {} ms", timeout.count()));
    ready_result_ =
        Error{Errc::kSystem, fmt::format("worker was not ready within {} ms", timeout.count())};
  }
  co_return *ready_result_;
}

uint64_t Instance::memory_peak() const {
  if (!cgroup_) return memory_peak_;  // the last read, once the worker has ended
  const auto now = steady_clock::now();
  if (now - memory_peak_at_ >= kMemoryPeakEvery) {  // the first time too: it starts at 0
    memory_peak_ = cgroup_->memory_peak();
    memory_peak_at_ = now;
  }
  return memory_peak_;
}

std::optional<os::SchedTimes> Instance::sched_times() const {
  if (!cgroup_) return os::sched_times(child_.pid());
  std::optional<os::SchedTimes> sum;
  for (pid_t pid : cgroup_->pids()) {
    if (auto t = os::sched_times(pid)) {
      if (!sum) sum.emplace();
      *sum += *t;
    }
  }
  return sum;
}

Status Instance::load(LaunchSpec spec, LogSink log, sandbox::Sandbox& sandbox) {
  if (state_ != State::kPooled || !exit_reason_.empty()) {
    return Error::invalid(
        "worker: only a pre-started worker waiting for its function can load one");
  }
  nlohmann::json env = nlohmann::json::object();
  for (const std::string& entry : spec.env) {
    const size_t eq = entry.find('=');
    if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  const sandbox::WorkerSpec waiting = spec_.worker;
  spec.worker.pooled = false;  // from here it is the function's worker, and READY means ready
  spec_ = std::move(spec);
  log_ = std::move(log);
  state_ = State::kStarting;
  ready_result_.reset();
  started_ = steady_clock::now();
  // LOAD first: the worker wakes and takes its environment in on another CPU while the sandbox
  // mounts the bundle, which takes a round trip to the spawner.
  send_now(encode(FrameType::kLoad, 0,
                  nlohmann::json{{"env", std::move(env)}}.dump(
                      -1, ' ', false, nlohmann::json::error_handler_t::replace),
                  {}));
  if (auto bound = sandbox.bind(child_, cgroup_.get(), waiting, spec_.worker); !bound) {
    return bound;
  }
  send_now(encode(FrameType::kMounted, 0, "{}", {}));
  return {};
}

asio::awaitable<CallResult> Instance::call(const std::string& request_id,
                                           const std::string& event_json, CallTags tags,
                                           std::chrono::nanoseconds timeout,
                                           int64_t deadline_wall_ms) {
  auto self = shared_from_this();
  if (state_ == State::kDead) {  // never sent: the caller may take it elsewhere
    co_return ended(/*started=*/false, exit_reason_);
  }
  const uint32_t id = next_call_++;
  const uint64_t lines_before = lines_;
  Pending p{asio::steady_timer(io_, steady_clock::time_point::max()), request_id, tags.depth,
            timeout, steady_clock::now()};
  pending_.emplace(id, &p);
  if (state_ != State::kStarting && running_ < std::max(1, spec_.concurrency) && queued_.empty()) {
    start(p, p.sent);
  } else {
    queued_.push_back(id);
  }
  send(encode(FrameType::kInvoke, id,
              invoke_meta(request_id, deadline_wall_ms,
                          std::chrono::ceil<std::chrono::milliseconds>(timeout).count(), tags.kind,
                          tags.qualifier),
              event_json));
  while (true) {
    auto [ec] = co_await p.timer.async_wait(kAwait);
    if (p.result || !ec) break;  // answered or failed, or the deadline passed; else it started
  }
  pending_.erase(id);
  CallResult r;
  if (p.result) {
    r = std::move(*p.result);
  } else {
    --running_;
    r.kind = CallResult::Kind::kTimeout;
    r.body = "the call did not finish before its deadline";
    kill("killed after a call timed out");
  }
  const auto end = p.answered.value_or(steady_clock::now());
  if (p.started) {
    r.waited = *p.started - p.sent;
    r.duration = end - *p.started;
  } else {
    r.waited = end - p.sent;
  }
  r.printed = lines_ != lines_before;
  r.kv_reads = p.kv_reads;
  r.kv_writes = p.kv_writes;
  co_return r;
}

void Instance::stop(std::chrono::milliseconds grace) {
  if (state_ == State::kDead || state_ == State::kStopping) return;
  state_ = State::kStopping;
  send(Frame{FrameType::kShutdown, 0, "{}", ""});
  kill_timer_.expires_after(grace);
  kill_timer_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
    if (ec) return;
    if (auto self = weak.lock()) self->kill("did not exit after SHUTDOWN");
  });
}

void Instance::kill(std::string reason) {
  if (state_ == State::kDead) return;
  if (exit_reason_.empty()) exit_reason_ = std::move(reason);
  (void)child_.signal(SIGKILL);
}

}  // namespace ember::worker
