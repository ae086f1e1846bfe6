// ember-runtime-api: the worker of a `runtime: provided` function (docs/lambda.md). It serves the
// Lambda Runtime API on the sandbox's loopback to the bundle's `bootstrap`, which it starts with
// AWS_LAMBDA_RUNTIME_API pointing at it, and speaks Ember's frames on fd 3
// (docs/worker-protocol.md) to the daemon: INVOKE becomes the answer of a waiting
// `GET /runtime/invocation/next`, a posted response or error becomes RESULT or ERROR, a posted
// init error becomes INIT_ERROR, and the bootstrap's first `next` is READY.
//
// One thread, one call at a time, as on Lambda. It is PID 1 of the worker's pid namespace: it
// reaps whatever the bootstrap leaves behind, and when it exits the kernel ends them all.
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "ember/worker/protocol.h"

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;
using ember::worker::FrameType;
using nlohmann::json;

namespace {

constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
// Lambda's limit on a response: 6 MiB and 100 bytes.
constexpr size_t kMaxResponseBytes = 6 * 1024 * 1024 + 100;
constexpr const char* kPrefix = "/2018-06-01/runtime/";

struct Event {
  uint32_t id = 0;  // the INVOKE's frame id
  std::string request_id;
  int64_t deadline_ms = 0;
  int64_t timeout_ms = -1;  // when given, the deadline counts from the delivery to the bootstrap
  std::string qualifier;    // the version or alias the caller named; empty: none
  std::string body;
  bool delivered = false;
};

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

Response reply(http::status status, const json& body) {
  Response res{status, 11};
  res.set(http::field::content_type, "application/json");
  res.body() = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return res;
}

Response api_error(http::status status, std::string_view type, std::string_view message) {
  return reply(status, json{{"errorType", type}, {"errorMessage", message}});
}

// The error a runtime posted, as Ember's ERROR and INIT_ERROR metas carry it: its JSON document
// read best-effort (errorType, errorMessage, stackTrace or trace), else its text; the
// Lambda-Runtime-Function-Error-Type header names the type when the body does not.
json error_meta(const Request& req) {
  json doc = json::parse(req.body(), nullptr, false);
  std::string type(req["Lambda-Runtime-Function-Error-Type"]);
  std::string message;
  json stack = json::array();
  if (doc.is_object()) {
    if (doc.contains("errorType") && doc["errorType"].is_string()) type = doc["errorType"];
    if (doc.contains("errorMessage") && doc["errorMessage"].is_string()) {
      message = doc["errorMessage"];
    }
    for (const char* key : {"stackTrace", "trace"}) {
      if (doc.contains(key) && doc[key].is_array()) {
        for (const auto& line : doc[key]) {
          if (line.is_string()) stack.push_back(line);
        }
      }
    }
  } else {
    message = req.body().substr(0, 4096);
  }
  if (type.empty()) type = "Function.Unknown";
  return json{{"errorType", type}, {"errorMessage", message}, {"stack", stack}};
}

class Shim {
 public:
  explicit Shim(asio::io_context& io)
      : io_(io),
        channel_(io, asio::local::stream_protocol(), 3),
        acceptor_(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0)),
        event_signal_(io, std::chrono::steady_clock::time_point::max()),
        signals_(io, SIGCHLD, SIGTERM) {}

  int run() {
    if (!start_bootstrap()) return 70;
    asio::co_spawn(io_, read_frames(), asio::detached);
    asio::co_spawn(io_, accept(), asio::detached);
    watch_signals();
    io_.run();
    return exit_code_;
  }

 private:
  // Starts $LAMBDA_TASK_ROOT/bootstrap with the environment the daemon gave this process plus
  // AWS_LAMBDA_RUNTIME_API; fd 3 is close-on-exec, so the bootstrap never holds the channel.
  bool start_bootstrap() {
    const std::string root = env_or("LAMBDA_TASK_ROOT", "/var/task");
    const std::string path = root + "/bootstrap";
    const std::string api = fmt::format("127.0.0.1:{}", acceptor_.local_endpoint().port());
    ::setenv("AWS_LAMBDA_RUNTIME_API", api.c_str(), 1);
    io_.notify_fork(asio::io_context::fork_prepare);
    child_ = ::fork();
    if (child_ == 0) {
      io_.notify_fork(asio::io_context::fork_child);
      ::signal(SIGPIPE, SIG_DFL);
      if (::chdir(root.c_str()) != 0) _exit(127);
      char* argv[] = {const_cast<char*>(path.c_str()), nullptr};
      ::execv(path.c_str(), argv);
      ::dprintf(2, "ember-runtime-api: cannot run %s: %s\n", path.c_str(), ::strerror(errno));
      _exit(127);
    }
    io_.notify_fork(asio::io_context::fork_parent);
    if (child_ < 0) {
      send(FrameType::kInitError, 0,
           json{{"errorType", "Runtime.ExitError"},
                {"errorMessage", fmt::format("cannot start the bootstrap: {}", ::strerror(errno))}}
               .dump(),
           "");
      return false;
    }
    return true;
  }

  // Frames leave at once, whole: asio made fd 3 non-blocking, so a frame larger than the
  // socket's buffer waits for the daemon to read, which it always does.
  void send(FrameType type, uint32_t id, std::string_view meta, std::string_view body) {
    const std::string wire = ember::worker::encode(type, id, meta, body);
    for (size_t off = 0; off < wire.size();) {
      ssize_t n = ::write(3, wire.data() + off, wire.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        pollfd p{3, POLLOUT, 0};
        ::poll(&p, 1, -1);
        continue;
      }
      if (n <= 0) {
        stop(0);  // the daemon is gone
        return;
      }
      off += static_cast<size_t>(n);
    }
  }

  void stop(int code) {
    exit_code_ = code;
    if (child_ > 0) ::kill(child_, SIGKILL);
    io_.stop();
  }

  asio::awaitable<void> read_frames() {
    ember::worker::FrameDecoder decoder;
    std::vector<char> buf(64 * 1024);
    while (true) {
      auto [ec, n] = co_await channel_.async_read_some(asio::buffer(buf), kAwait);
      if (ec) break;
      decoder.feed(std::string_view(buf.data(), n));
      while (true) {
        auto frame = decoder.next();
        if (!frame) {
          stop(70);
          co_return;
        }
        if (!frame->has_value()) break;
        auto& f = **frame;
        if (f.type == FrameType::kShutdown) {
          shutdown();
          co_return;
        }
        if (f.type != FrameType::kInvoke) continue;
        json meta = json::parse(f.meta, nullptr, false);
        Event e;
        e.id = f.id;
        e.body = std::move(f.body);
        if (meta.is_object()) {
          e.request_id = meta.value("requestId", "");
          e.deadline_ms = meta.value("deadlineMs", int64_t{0});
          e.timeout_ms = meta.value("timeoutMs", int64_t{-1});
          if (auto q = meta.find("qualifier"); q != meta.end() && q->is_string()) {
            e.qualifier = q->get<std::string>();
          }
        }
        queued_.push_back(std::move(e));
        event_signal_.cancel();
      }
    }
    shutdown();  // the daemon closed the channel
  }

  void shutdown() {
    if (child_ > 0) ::kill(child_, SIGTERM);
    stopping_ = true;
    // The daemon kills this worker after its grace period if the bootstrap lingers.
  }

  void watch_signals() {
    signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGTERM) {
        stop(0);
        return;
      }
      int status = 0;
      pid_t pid;
      // PID 1 of the namespace: reap the bootstrap and whatever it orphaned.
      while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == child_) {
          child_ = -1;
          bootstrap_exited(status);
        }
      }
      watch_signals();
    });
  }

  // The bootstrap ended. Before its first `next` that is the function's init error; during a
  // call, the worker ends with its status, so the daemon reports the call as a crash. Between
  // calls it is started again, as Lambda starts a runtime again, and the next call waits for
  // it: unless it ended without asking for a call since its last start, which would repeat.
  void bootstrap_exited(int status) {
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    const std::string how = WIFEXITED(status) ? fmt::format("exit status {}", WEXITSTATUS(status))
                                              : fmt::format("signal {}", WTERMSIG(status));
    if (stopping_) {
      stop(0);
      return;
    }
    // The worker ends below unless the bootstrap is started again: say first what ended it, so
    // that a seccomp kill of the bootstrap is reported as the sandbox violation it is.
    const bool restart = ready_ && !current_ && asked_since_start_;
    if (!restart && WIFSIGNALED(status)) {
      send(FrameType::kExiting, 0, json{{"signal", WTERMSIG(status)}}.dump(), "");
    }
    if (!ready_) {
      if (!init_error_sent_) {
        send(FrameType::kInitError, 0,
             json{{"errorType", "Runtime.ExitError"},
                  {"errorMessage", code == 0 ? "Runtime exited without providing a reason"
                                             : "Runtime exited with error: " + how}}
                 .dump(),
             "");
      }
      stop(code == 0 ? 1 : code);
      return;
    }
    if (!current_ && asked_since_start_) {
      asked_since_start_ = false;
      if (start_bootstrap()) return;
    }
    stop(code == 0 ? 1 : code);
  }

  asio::awaitable<void> accept() {
    while (true) {
      auto [ec, socket] = co_await acceptor_.async_accept(kAwait);
      if (ec) co_return;
      asio::co_spawn(io_, session(std::move(socket)), asio::detached);
    }
  }

  asio::awaitable<void> session(tcp::socket socket) {
    boost::beast::flat_buffer buffer;
    while (true) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(64 * 1024);  // the X-Ray error cause runtimes send can be large
      parser.body_limit(kMaxResponseBytes);
      auto [hec, hn] = co_await http::async_read_header(socket, buffer, parser, kAwait);
      boost::system::error_code ec = hec;
      if (!ec && parser.get()[http::field::expect] == "100-continue") {
        // curl asks before posting a large body, and waits a second for this unless answered.
        http::response<http::empty_body> go{http::status::continue_, 11};
        auto [cec, cn] = co_await http::async_write(socket, go, kAwait);
        ec = cec;
      }
      if (!ec && !parser.is_done()) {
        auto [bec, bn] = co_await http::async_read(socket, buffer, parser, kAwait);
        ec = bec;
      }
      Response res;
      bool keep = false;
      if (ec == http::error::body_limit) {
        res = too_large();
      } else if (ec) {
        co_return;
      } else {
        Request req = parser.release();
        keep = req.keep_alive();
        res = co_await route(req);
      }
      res.keep_alive(keep);
      res.prepare_payload();
      auto [wec, wn] = co_await http::async_write(socket, res, kAwait);
      if (wec || !keep) co_return;
    }
  }

  Response too_large() {
    // The call is answered: the caller gets Lambda's error for an oversized response.
    if (current_ && current_->delivered) {
      answered(FrameType::kError,
               json{{"errorType", "Function.ResponseSizeTooLarge"},
                    {"errorMessage",
                     fmt::format("Response payload size exceeded maximum allowed payload size "
                                 "({} bytes).",
                                 kMaxResponseBytes)},
                    {"stack", json::array()}}
                   .dump(),
               "");
    }
    return api_error(
        http::status::payload_too_large, "RequestEntityTooLarge",
        fmt::format("Exceeded maximum allowed payload size ({} bytes).", kMaxResponseBytes));
  }

  asio::awaitable<Response> route(const Request& req) {
    std::string_view target = req.target();
    if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
    if (!target.starts_with(kPrefix)) {
      co_return api_error(http::status::not_found, "NotFound", "no such path");
    }
    target.remove_prefix(std::string_view(kPrefix).size());
    if (target == "invocation/next") {
      if (req.method() != http::verb::get) co_return not_allowed();
      co_return co_await next();
    }
    if (req.method() != http::verb::post) co_return not_allowed();
    if (target == "init/error") {
      if (ready_ || init_error_sent_) {
        co_return api_error(http::status::forbidden, "InvalidStateTransition",
                            "the runtime has already started");
      }
      init_error_sent_ = true;
      send(FrameType::kInitError, 0,
           error_meta(req).dump(-1, ' ', false, json::error_handler_t::replace), "");
      co_return accepted();
    }
    constexpr std::string_view kInvocation = "invocation/";
    if (target.starts_with(kInvocation)) {
      target.remove_prefix(kInvocation.size());
      const size_t slash = target.find('/');
      const std::string_view id = target.substr(0, slash);
      const std::string_view what =
          slash == std::string_view::npos ? std::string_view() : target.substr(slash + 1);
      if (what == "response" || what == "error") {
        if (!current_ || !current_->delivered || current_->request_id != id) {
          if (!id.empty() && id == last_answered_) {
            co_return api_error(http::status::forbidden, "InvalidStateTransition",
                                "this invocation has already been answered");
          }
          co_return api_error(http::status::bad_request, "InvalidRequestID", "Invalid request ID");
        }
        if (what == "response") {
          answer_response(req);
        } else {
          answered(FrameType::kError,
                   error_meta(req).dump(-1, ' ', false, json::error_handler_t::replace), "");
        }
        co_return accepted();
      }
    }
    co_return api_error(http::status::not_found, "NotFound", "no such path");
  }

  // A response is JSON text for Ember's RESULT; other bytes go as they are, with a content type.
  void answer_response(const Request& req) {
    const std::string& body = req.body();
    if (json::accept(body)) {
      answered(FrameType::kResult, "{}", body);
      return;
    }
    std::string type(req[http::field::content_type]);
    if (type.empty() || type == "application/x-www-form-urlencoded") {
      type = "application/octet-stream";  // curl -d's default says nothing of the content
    }
    answered(FrameType::kResult, json{{"contentType", type}}.dump(), body);
  }

  void answered(FrameType type, std::string_view meta, std::string_view body) {
    send(type, current_->id, meta, body);
    last_answered_ = current_->request_id;
    current_.reset();
    event_signal_.cancel();  // a `next` waiting beside the one answered may take a queued call
  }

  asio::awaitable<Response> next() {
    asked_since_start_ = true;
    if (!ready_) {
      ready_ = true;
      send(FrameType::kReady, 0, "{}", "");
    }
    // A repeated `next` while a call is out gets that call again, as Lambda's does. Otherwise
    // it waits for a call; of two waiting at once, one gets it and the other waits on.
    if (!current_) {
      while (!current_ || current_->delivered) {
        if (!current_ && !queued_.empty()) {
          current_ = std::move(queued_.front());
          queued_.pop_front();
          break;
        }
        event_signal_.expires_at(std::chrono::steady_clock::time_point::max());
        co_await event_signal_.async_wait(kAwait);
      }
    }
    current_->delivered = true;
    Response res{http::status::ok, 11};
    res.set(http::field::content_type, "application/json");
    res.set("Lambda-Runtime-Aws-Request-Id", current_->request_id);
    if (current_->timeout_ms >= 0) {
      current_->deadline_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count() +
                              current_->timeout_ms;
    }
    res.set("Lambda-Runtime-Deadline-Ms", std::to_string(current_->deadline_ms));
    res.set("Lambda-Runtime-Invoked-Function-Arn", current_->qualifier.empty()
                                                       ? function_arn_
                                                       : function_arn_ + ":" + current_->qualifier);
    res.set("Lambda-Runtime-Trace-Id", trace_id(current_->request_id));
    res.body() = current_->body;
    co_return res;
  }

  // An X-Ray shaped trace header; Ember does not trace, but runtimes copy it into
  // _X_AMZN_TRACE_ID and some parse it.
  static std::string trace_id(std::string_view request_id) {
    std::string hex;
    for (char c : request_id) {
      if (std::isxdigit(static_cast<unsigned char>(c))) hex += c;
    }
    hex.resize(32, '0');
    return fmt::format("Root=1-{}-{};Parent={};Sampled=0", hex.substr(0, 8), hex.substr(8, 24),
                       hex.substr(16, 16));
  }

  static Response accepted() { return reply(http::status::accepted, json{{"status", "OK"}}); }
  static Response not_allowed() {
    return api_error(http::status::method_not_allowed, "MethodNotAllowed", "method not allowed");
  }

  asio::io_context& io_;
  asio::local::stream_protocol::socket channel_;
  tcp::acceptor acceptor_;
  asio::steady_timer event_signal_;
  asio::signal_set signals_;
  pid_t child_ = -1;
  std::deque<Event> queued_;
  std::optional<Event> current_;
  std::string last_answered_;
  bool ready_ = false;
  bool init_error_sent_ = false;
  bool stopping_ = false;
  bool asked_since_start_ = false;  // the bootstrap running now has asked for a call
  int exit_code_ = 0;
  const std::string function_arn_ =
      fmt::format("arn:aws:lambda:{}:000000000000:function:{}", env_or("AWS_REGION", "us-east-1"),
                  env_or("AWS_LAMBDA_FUNCTION_NAME", "function"));
};

}  // namespace

int main() {
  ::signal(SIGPIPE, SIG_IGN);
  if (::fcntl(3, F_SETFD, FD_CLOEXEC) != 0) return 70;
  // The SIGCHLD handler is in place (Shim's signal_set) before the bootstrap is forked.
  asio::io_context io(1);
  Shim shim(io);
  return shim.run();
}
