// The key-value service as functions reach it: the requests a worker sends as KV frames
// (docs/worker-protocol.md) parsed, checked against the namespaces the function was granted and
// its budget of operations per call, run on a Store, and answered in the reply's wire shape.
// It knows nothing of processes or event loops: the runtime layer carries its replies.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "ember/kv/store.h"

namespace ember::kv {

enum class Access { kNone, kRead, kReadWrite };
// "r" or "rw", as a manifest spells a grant; nullopt for another string.
std::optional<Access> parse_access(std::string_view text);

// What one function may reach: its own namespace read-write, and the namespaces it was granted.
struct Grants {
  std::string own;
  std::map<std::string, Access, std::less<>> shared;
  Access access(std::string_view ns) const;
};

struct ServiceOptions {
  uint32_t max_ops_per_call = 1000;  // a call's operations past this fail with KvTooManyOperations
};

// What a request counts as in a call's usage.
enum class Counted { kNone, kRead, kWrite };

// One operation that reached the store, for metrics: who, what, how it ended (an empty
// error_type: it succeeded) and how long the store took.
struct OpRecord {
  std::string_view function;
  Op op;
  std::string_view error_type;
  std::chrono::nanoseconds duration;
};

class Service {
 public:
  // A reply's meta (a JSON object) and body.
  using Done = std::function<void(std::string meta, std::string body)>;

  Service(Store& store, ServiceOptions options, const Clock& clock = system_clock());

  // Serves one KV_REQUEST of the function `grants` describes. `ops_in_call` is how many
  // requests the same call made before this one; nullopt when the request belongs to no call
  // that is still running, which is refused. `done` is called once: on a store thread, or at
  // once when the request is refused before it reaches the store. Returns what the request
  // counts as (kNone when refused before the store).
  Counted handle(const Grants& grants, const nlohmann::json& meta, std::string body,
                 std::optional<uint32_t> ops_in_call, Done done);

  // Called for every operation that reached the store, on the thread its reply is made on.
  // Set before the first request.
  void on_op(std::function<void(const OpRecord&)> observer) {
    watch_->observer = std::move(observer);
  }

  Store& store() { return store_; }
  const Limits& limits() const { return store_.limits(); }
  const ServiceOptions& options() const { return options_; }

  // The reply of a refused request: {"ok": false, "errorType", "errorMessage"}.
  static std::string error_meta(const Error& error);
  // A page of list() as the reply body and the admin API show it:
  // [{"key", "value", "version", "expiresMs"?}, ...] with each value as its JSON text.
  static std::string page_json(const Page& page);

 private:
  Store& store_;
  ServiceOptions options_;
  struct Watch {
    std::function<void(const OpRecord&)> observer;
    const Clock* clock;
  };
  std::shared_ptr<Watch> watch_;
};

}  // namespace ember::kv
