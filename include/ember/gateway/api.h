// Ember's HTTP API: routing, admin authentication and the deploy routes of docs/api.md.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/thread_pool.hpp>
#include <string>
#include <utility>

#include "ember/common/log.h"
#include "ember/events/dispatcher.h"
#include "ember/events/store.h"
#include "ember/events/timetable.h"
#include "ember/gateway/keys.h"
#include "ember/gateway/server.h"
#include "ember/kv/service.h"
#include "ember/logs/store.h"
#include "ember/metering/metrics.h"
#include "ember/metering/usage.h"
#include "ember/registry/registry.h"
#include "ember/runtime/pool.h"
#include "ember/scheduler/scheduler.h"
#include "ember/worker/call.h"

namespace ember::gateway {

struct ApiOptions {
  std::string admin_token;
  uint64_t max_bundle_bytes = 50ull << 20;
  uint64_t max_body_bytes = 6ull << 20;  // events of invoke and HTTP-trigger routes
  std::chrono::milliseconds delete_drain{30'000};
};

// Routes requests to the registry and the scheduler. Runs on the io_context's thread; registry
// mutations go to `blocking`, a pool for disk work, so a large deploy never stalls other
// requests. Without a scheduler (unit tests of routing) invoke routes answer 503.
class Api final : public Application {
 public:
  Api(ApiOptions options, registry::Registry& registry, boost::asio::thread_pool& blocking,
      scheduler::Scheduler* scheduler = nullptr, logs::LogStore* logs = nullptr);

  // Lets /readyz report draining; set once the server exists.
  void set_server(const HttpServer* server) { server_ = server; }
  // Where calls are counted (/metrics) and billed (/v1/usage); either may be null.
  void set_metering(metering::Metrics* metrics, metering::UsageStore* usage,
                    metering::Prices prices) {
    metrics_ = metrics;
    usage_ = usage;
    prices_ = prices;
  }
  // The invoke keys of functions (/v1/functions/{name}/keys); without them only the admin
  // token authorizes.
  void set_keys(InvokeKeys* keys) { keys_ = keys; }
  // Pre-initialised workers, counted in /metrics.
  void set_pool(const runtime::PooledFactory* pool) { pool_ = pool; }
  void set_bytecode(const runtime::BytecodeCompiler* bytecode) { bytecode_ = bytecode; }
  // The key-value service behind /v1/kv; without it those routes answer 503.
  void set_kv(kv::Service* kv) { kv_ = kv; }
  // Asynchronous invocation (?mode=async, Lambda's Event type, /v1/invocations, dead letters);
  // without them those routes answer 503.
  void set_events(events::Dispatcher* dispatcher, events::Store* store,
                  events::Timetable* timetable = nullptr) {
    events_ = dispatcher;
    event_store_ = store;
    timetable_ = timetable;
  }
  // One attempt of an asynchronous event: the scheduler's invoke, logged and metered like any
  // call.
  boost::asio::awaitable<scheduler::InvokeOutcome> run_event(const events::Event& event,
                                                             scheduler::InvokeRequest request);
  // Serves workers' calls of other functions (context.invoke) on `executor`, the event loop's.
  worker::InvokeHandler function_calls(boost::asio::any_io_executor executor);
  // Another node deployed, changed or deleted `name` (shared storage): `now` is its record, or
  // nullptr when it was deleted. On the event loop's thread.
  void changed_elsewhere(const std::string& name, registry::RecordPtr now);
  // A reloaded configuration.
  void set_admin_token(std::string token) { options_.admin_token = std::move(token); }
  void set_prices(metering::Prices prices) { prices_ = prices; }

  Plan plan(const RequestHeader& header, Transport transport) override;
  boost::asio::awaitable<Reply> handle(const Plan& plan, Request request) override;
  // Reads a function this node does not know from the shared store (Registry::catch_up).
  boost::asio::awaitable<void> catch_up(const std::string& name) override;
  // Counts the answer; a 4xx of Ember's own (not a function's) is logged, rate-limited.
  void answered(const Plan& plan, const Response& response) override;
  Response too_large(const Plan& plan, std::string message) override;

 private:
  // An INVOKE_REQUEST, copied out of the worker's frame.
  struct FunctionCall {
    std::string caller;
    int caller_version = 0;
    std::string request_id;  // the caller's call
    int depth = 0;           // the caller's call's depth
    std::string target;      // NAME or NAME:QUALIFIER
    bool async = false;
    std::string event;
  };
  // The rejection of a call naming a function this node does not know; with a shared store it
  // asks to read the name again first (Plan::catch_up).
  Plan unknown_function(const std::string& name, Response not_found) const;
  // Runs `call`; completes with the INVOKE_REPLY's meta and body.
  boost::asio::awaitable<std::pair<std::string, std::string>> function_call(FunctionCall call);
  boost::asio::awaitable<Response> deploy(const Plan& plan, Request request);
  boost::asio::awaitable<Response> patch(const Plan& plan, Request request);
  boost::asio::awaitable<Response> rollback(const Plan& plan, Request request);
  boost::asio::awaitable<Response> remove(const Plan& plan);
  boost::asio::awaitable<Response> invoke(const Plan& plan, Request request);
  boost::asio::awaitable<Reply> logs(const Plan& plan, const Request& request);
  boost::asio::awaitable<Response> usage(const Plan& plan, const Request& request);
  boost::asio::awaitable<Response> kv(const Plan& plan, Request request);
  boost::asio::awaitable<Response> keys(const Plan& plan, const Request& request);
  boost::asio::awaitable<Response> aliases(const Plan& plan, const Request& request);
  boost::asio::awaitable<Response> event_routes(const Plan& plan, const Request& request);
  // Queues `payload` (JSON) for `plan`'s function and answers 202 with the event's id, in
  // Ember's format or (`lambda`) Lambda's.
  boost::asio::awaitable<Response> send_event(const Plan& plan, std::string payload,
                                              std::string source, bool lambda);
  Response list_functions(const Request& request) const;
  boost::asio::awaitable<Response> lambda_invoke(const Plan& plan, Request request);
  boost::asio::awaitable<Response> lambda_functions(const Plan& plan, Request request);
  boost::asio::awaitable<Response> lambda_aliases(const Plan& plan, const Request& request);
  // Checks a Lambda API request's SigV4 signature, when it has one, against the admin
  // credential or an invoke key of `function` (empty: the admin credential only).
  Status check_signature(const Request& request, const std::string& function) const;
  Response metrics() const;
  void meter(const std::string& function, const std::string& request_id,
             const scheduler::InvokeOutcome& outcome);
  nlohmann::json view(const registry::FunctionRecord& record) const;
  // A new version is active: the scheduler and the schedules follow it.
  void deployed(const registry::RecordPtr& record);

  ApiOptions options_;
  registry::Registry& registry_;
  boost::asio::thread_pool& blocking_;
  scheduler::Scheduler* scheduler_;
  logs::LogStore* logs_;
  const HttpServer* server_ = nullptr;
  metering::Metrics* metrics_ = nullptr;
  // 4xx answers logged: ten at once, then one a second.
  LogRateLimiter client_errors_log_{1, 10};
  metering::UsageStore* usage_ = nullptr;
  metering::Prices prices_;
  kv::Service* kv_ = nullptr;
  events::Dispatcher* events_ = nullptr;
  events::Store* event_store_ = nullptr;
  events::Timetable* timetable_ = nullptr;
  InvokeKeys* keys_ = nullptr;
  const runtime::PooledFactory* pool_ = nullptr;
  const runtime::BytecodeCompiler* bytecode_ = nullptr;
};

// The access key id of the admin credential for SigV4 requests; its secret is the admin token.
inline constexpr std::string_view kAdminKeyId = "admin";

// The JSON view of a function served by GET and returned by mutations.
nlohmann::json function_view(const registry::FunctionRecord& record);

}  // namespace ember::gateway
