// What a call on a worker comes back with, and where a worker's output lines go: the types the
// layers above a worker (runtime, scheduler) share with it, without its process machinery.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace ember::worker {

// Why a worker process ended under a call: it exited or was killed, its cgroup hit its memory
// limit, or seccomp killed it for a forbidden system call.
enum class ExitCause { kExited, kOutOfMemory, kSandboxViolation };

// Lambda's error type for `cause`: Runtime.ExitError, Runtime.OutOfMemory or
// Runtime.SandboxViolation. The only place these strings are spelled.
constexpr std::string_view error_type(ExitCause cause) {
  switch (cause) {
    case ExitCause::kOutOfMemory:
      return "Runtime.OutOfMemory";
    case ExitCause::kSandboxViolation:
      return "Runtime.SandboxViolation";
    case ExitCause::kExited:
      break;
  }
  return "Runtime.ExitError";
}

// What a handler's context is told about a call besides its event (INVOKE meta,
// docs/worker-protocol.md). The views are read only until the INVOKE frame is sent.
struct CallTags {
  std::string_view kind = "invoke";  // "invoke" or "http"
  std::string_view qualifier;        // the version or alias the caller named; empty: none
  // How many function-to-function calls led to this one (0: a call from outside). The daemon
  // keeps it; the worker is not told.
  int depth = 0;
};

struct CallResult {
  // kNotStarted: the call was queued at the instance behind another and the worker ended before
  // it began, so the handler never saw it and it can go to another instance.
  enum class Kind { kOk, kFunctionError, kTimeout, kCrash, kNotStarted };
  Kind kind = Kind::kCrash;
  std::string body;  // kOk: the value as JSON, or bytes of `content_type`; kFunctionError:
                     // the error object as JSON; kCrash, kTimeout and kNotStarted: a sentence
  // kOk: the media type of a body that is not JSON (a `provided` runtime's raw response);
  // empty for JSON.
  std::string content_type;
  // From the start of the call in the worker to its answer; the time it waited at the instance
  // behind the calls ahead of it is `waited`.
  std::chrono::nanoseconds duration{0};
  std::chrono::nanoseconds waited{0};
  // Whether the worker printed lines while the call ran.
  bool printed = false;
  // kCrash: why the worker ended under the call.
  std::optional<ExitCause> cause;
  // Key-value operations the call made, as its usage counts them.
  uint32_t kv_reads = 0;
  uint32_t kv_writes = 0;
};

// What a key-value request counts as in its call's usage.
enum class KvCount { kNone, kRead, kWrite };
// The meta and body of a KV_REPLY.
using KvReply = std::function<void(std::string meta, std::string body)>;
// Serves a KV_REQUEST (docs/worker-protocol.md) from its meta (a parsed JSON object) and body.
// `ops_in_call` is how many requests its call made before it; nullopt when it belongs to no
// call still running. `reply` must be called once, on the event loop's thread. Returns what the
// request counts as.
using KvHandler = std::function<KvCount(const nlohmann::json& meta, std::string body,
                                        std::optional<uint32_t> ops_in_call, KvReply reply)>;

// Who makes a function-to-function call (an INVOKE_REQUEST): the worker's function and
// version, and the call the request was made for, with its depth. Valid during the handler.
struct CallOrigin {
  std::string_view function;
  int version = 0;
  std::string_view request_id;
  int depth = 0;
};
// The meta and body of an INVOKE_REPLY.
using InvokeReply = std::function<void(std::string meta, std::string body)>;
// Serves an INVOKE_REQUEST (docs/worker-protocol.md) made by `origin`, from its meta (a parsed
// JSON object) and body (the event). `reply` must be called once, on the event loop's thread.
using InvokeHandler = std::function<void(const CallOrigin& origin, const nlohmann::json& meta,
                                         std::string body, InvokeReply reply)>;

// Receives each captured line: stream ("stdout"/"stderr"), the request it belongs to (empty
// when it cannot be told), and the text without its newline.
using LogSink =
    std::function<void(std::string_view stream, std::string_view request_id, std::string text)>;

}  // namespace ember::worker
