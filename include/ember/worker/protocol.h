// Frames between emberd and a worker on fd 3; docs/worker-protocol.md is the contract.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ember/common/result.h"

namespace ember::worker {

enum class FrameType : uint32_t {
  kReady = 1,
  kInitError = 2,
  kInvoke = 3,
  kResult = 4,
  kError = 5,
  kKvRequest = 6,
  kKvReply = 7,
  kShutdown = 8,
  // Worker → daemon, before a worker that runs its runtime as a child process exits because
  // that child ended: {"signal": N} when a signal ended it. A seccomp kill of the child is
  // then reported as the worker's own (provided runtimes).
  kExiting = 9,
  // Worker → daemon: context.invoke of another function, for the call named in the meta
  // (docs/worker-protocol.md#invoke_request); the daemon answers with an INVOKE_REPLY of the same
  // id.
  kInvokeRequest = 10,
  kInvokeReply = 11,
  // Daemon → a pre-started worker: the function it now serves ({"env": {...}}). The worker takes
  // in the environment and waits for MOUNTED (docs/worker-protocol.md#pre-initialised-workers).
  kLoad = 12,
  // Daemon → a worker after LOAD: its bundle is mounted on LAMBDA_TASK_ROOT; it enters it, loads
  // the handler and sends READY or INIT_ERROR.
  kMounted = 13,
};

inline constexpr size_t kHeaderBytes = 16;
inline constexpr uint32_t kMaxMetaBytes = 64 * 1024;
inline constexpr uint32_t kMaxBodyBytes = 64 * 1024 * 1024;

struct Frame {
  FrameType type = FrameType::kReady;
  uint32_t id = 0;
  std::string meta = "{}";  // a JSON object
  std::string body;
};

// Appends the wire form of `frame` to `out`.
void encode(const Frame& frame, std::string& out);
std::string encode(const Frame& frame);
std::string encode(FrameType type, uint32_t id, std::string_view meta, std::string_view body);

// The meta of an INVOKE (docs/worker-protocol.md#invocation): {"requestId", "deadlineMs",
// "timeoutMs", "kind"[, "qualifier" when not empty]}. Written directly, not through a JSON
// object: one is made for every call.
std::string invoke_meta(std::string_view request_id, int64_t deadline_ms, int64_t timeout_ms,
                        std::string_view kind, std::string_view qualifier);

// Reassembles frames from a byte stream. One owner thread.
class FrameDecoder {
 public:
  // Appends received bytes.
  void feed(std::string_view bytes);
  // The next complete frame, nullopt when more bytes are needed, or an error when the stream
  // breaks the protocol (unknown type, lengths over the limits); after an error the stream is
  // unusable.
  Result<std::optional<Frame>> next();
  // Bytes received but not yet returned as frames.
  size_t buffered() const { return buffer_.size() - offset_; }

 private:
  std::string buffer_;
  size_t offset_ = 0;
};

}  // namespace ember::worker
