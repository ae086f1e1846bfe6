#include "ember/gateway/api.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/url/parse.hpp>
#include <charconv>
#include <cstdio>
#include <ctime>

#include "ember/common/clock.h"
#include "ember/common/json_fields.h"
#include "ember/gateway/auth.h"
#include "ember/gateway/blocking.h"
#include "invocation.h"

namespace ember::gateway {

namespace asio = boost::asio;
namespace urls = boost::urls;
using nlohmann::json;

namespace {

constexpr uint64_t kSmallBodyBytes = 64 * 1024;

enum Route : int {
  kNone,  // rejected before a route was chosen
  kHealth,
  kMetrics,
  kUsage,
  kFunctionUsage,
  kReady,
  kListFunctions,
  kGetFunction,
  kDeploy,
  kPatch,
  kDelete,
  kRollback,
  kInvoke,
  kHttpTrigger,
  kLogs,
};

// The route label of ember_http_requests_total.
std::string_view route_name(int route) {
  switch (static_cast<Route>(route)) {
    case kNone:
      return "none";
    case kHealth:
      return "healthz";
    case kReady:
      return "readyz";
    case kMetrics:
      return "metrics";
    case kUsage:
      return "usage";
    case kFunctionUsage:
      return "function_usage";
    case kListFunctions:
      return "list_functions";
    case kGetFunction:
      return "get_function";
    case kDeploy:
      return "deploy";
    case kPatch:
      return "patch";
    case kDelete:
      return "delete";
    case kRollback:
      return "rollback";
    case kInvoke:
      return "invoke";
    case kHttpTrigger:
      return "http_trigger";
    case kLogs:
      return "logs";
  }
  return "none";
}

Response method_not_allowed(http::verb method, std::string_view allow) {
  Response res = error_response(
      http::status::method_not_allowed, "method_not_allowed",
      fmt::format("method {} is not allowed here; allowed: {}", http::to_string(method), allow));
  res.set(http::field::allow, allow);
  return res;
}

Response unauthorized(std::string_view message) {
  Response res = error_response(http::status::unauthorized, "unauthorized", message);
  res.set(http::field::www_authenticate, "Bearer realm=\"ember\"");
  return res;
}

Plan reject(Response res) {
  Plan p;
  p.reject = std::move(res);
  return p;
}

Plan accept(Route route, uint64_t body_limit, std::string name = {}) {
  Plan p;
  p.route = route;
  p.body_limit = body_limit;
  p.name = std::move(name);
  return p;
}

// Seconds since the epoch, "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SSZ" (UTC), as milliseconds.
std::optional<int64_t> parse_time(const std::string& text) {
  if (!text.empty() &&
      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    int64_t seconds = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
    if (ec != std::errc() || seconds > 100'000'000'000) return std::nullopt;
    return seconds * 1000;
  }
  std::tm tm{};
  int consumed = 0;
  if (text.size() == 10 &&
      std::sscanf(text.c_str(), "%4d-%2d-%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &consumed) ==
          3 &&
      consumed == 10) {
  } else if (text.size() == 20 &&
             std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &tm.tm_year, &tm.tm_mon,
                         &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) == 6 &&
             consumed == 20) {
  } else {
    return std::nullopt;
  }
  if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
      tm.tm_min > 59 || tm.tm_sec > 60) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<int64_t>(::timegm(&tm)) * 1000;
}

std::string format_time(int64_t ms) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::vector<std::pair<std::string, std::string>> query_params(std::string_view target) {
  std::vector<std::pair<std::string, std::string>> out;
  auto url = urls::parse_origin_form(target);
  if (!url) return out;
  for (auto param : url->params()) out.emplace_back(param.key, param.value);
  return out;
}

}  // namespace

json function_view(const registry::FunctionRecord& record) {
  json view = record.to_json();
  const auto& active = record.active();
  view["config"] = active.config.to_json();
  view["bundle_sha256"] = active.bundle_sha256;
  return view;
}

Api::Api(ApiOptions options, registry::Registry& registry, asio::thread_pool& blocking,
         scheduler::Scheduler* scheduler, worker::LogStore* logs)
    : options_(std::move(options)),
      registry_(registry),
      blocking_(blocking),
      scheduler_(scheduler),
      logs_(logs) {}

json Api::view(const registry::FunctionRecord& record) const {
  json v = function_view(record);
  if (scheduler_) {
    v["instances"] = scheduler_->instance_counts(record.name);
    v["sandbox"] = scheduler_->sandbox_counts(record.name);
  }
  return v;
}

Plan Api::plan(const RequestHeader& header, Transport transport) {
  const http::verb method = header.method();
  auto url = urls::parse_origin_form(header.target());
  if (!url) {
    return reject(
        error_response(http::status::bad_request, "bad_request", "malformed request target"));
  }
  std::vector<std::string_view> segments;
  for (auto seg : url->encoded_segments()) segments.emplace_back(seg.data(), seg.size());

  if (segments.size() == 1 && (segments[0] == "healthz" || segments[0] == "readyz")) {
    if (method != http::verb::get && method != http::verb::head) {
      return reject(method_not_allowed(method, "GET, HEAD"));
    }
    return accept(segments[0] == "healthz" ? kHealth : kReady, kSmallBodyBytes);
  }
  // Open like the health routes, for Prometheus to scrape; it names functions but holds no
  // secret. Bind the daemon to a private address to keep it private.
  if (segments.size() == 1 && segments[0] == "metrics") {
    if (method != http::verb::get && method != http::verb::head) {
      return reject(method_not_allowed(method, "GET, HEAD"));
    }
    return accept(kMetrics, kSmallBodyBytes);
  }

  // Invoke routes: open unless the function asks for a token ("auth": "token").
  const bool is_invoke = segments.size() == 4 && segments[0] == "v1" &&
                         segments[1] == "functions" && segments[3] == "invoke";
  const bool is_trigger = segments.size() >= 2 && segments[0] == "fn";
  if (is_invoke || is_trigger) {
    std::string name(segments[is_invoke ? 2 : 1]);
    if (auto st = registry::validate_name(name); !st) return reject(error_response(st.error()));
    if (is_invoke && method != http::verb::post) return reject(method_not_allowed(method, "POST"));
    auto record = registry_.get(name);
    if (!record) {
      return reject(error_response(Error::not_found("function " + name + " does not exist")));
    }
    if (record->active().config.auth == "token" && transport == Transport::kTcp) {
      auto it = header.find(http::field::authorization);
      if (it == header.end() || !bearer_matches(it->value(), options_.admin_token)) {
        return reject(unauthorized("function " + name + " needs a bearer token"));
      }
    }
    return accept(is_invoke ? kInvoke : kHttpTrigger, options_.max_body_bytes, std::move(name));
  }

  if (segments.empty() || segments[0] != "v1") {
    return reject(error_response(http::status::not_found, "not_found",
                                 fmt::format("no route for {} {}", http::to_string(method),
                                             std::string_view(url->encoded_path()))));
  }
  // Everything under /v1/ is admin API here; on TCP it needs the admin token. The Unix
  // socket's file permissions are its access control.
  if (transport == Transport::kTcp) {
    auto it = header.find(http::field::authorization);
    if (it == header.end()) return reject(unauthorized("missing Authorization: Bearer token"));
    if (!bearer_matches(it->value(), options_.admin_token)) {
      return reject(unauthorized("invalid admin token"));
    }
  }

  if (segments.size() == 2 && segments[1] == "usage") {
    if (method != http::verb::get) return reject(method_not_allowed(method, "GET"));
    return accept(kUsage, kSmallBodyBytes);
  }
  if (segments.size() >= 2 && segments[1] == "functions") {
    if (segments.size() == 2) {
      if (method != http::verb::get) return reject(method_not_allowed(method, "GET"));
      return accept(kListFunctions, kSmallBodyBytes);
    }
    // Names never need percent-encoding, so the raw segment is checked: "%2e%2e" is as
    // invalid as "..".
    std::string name(segments[2]);
    if (auto st = registry::validate_name(name); !st) return reject(error_response(st.error()));
    if (segments.size() == 3) {
      switch (method) {
        case http::verb::get:
          return accept(kGetFunction, kSmallBodyBytes, std::move(name));
        case http::verb::put:
          return accept(kDeploy, options_.max_bundle_bytes, std::move(name));
        case http::verb::patch:
          return accept(kPatch, kSmallBodyBytes, std::move(name));
        case http::verb::delete_:
          return accept(kDelete, kSmallBodyBytes, std::move(name));
        default:
          return reject(method_not_allowed(method, "GET, PUT, PATCH, DELETE"));
      }
    }
    if (segments.size() == 4 && segments[3] == "rollback") {
      if (method != http::verb::post) return reject(method_not_allowed(method, "POST"));
      return accept(kRollback, kSmallBodyBytes, std::move(name));
    }
    if (segments.size() == 4 && segments[3] == "logs") {
      if (method != http::verb::get) return reject(method_not_allowed(method, "GET"));
      return accept(kLogs, kSmallBodyBytes, std::move(name));
    }
    if (segments.size() == 4 && segments[3] == "usage") {
      if (method != http::verb::get) return reject(method_not_allowed(method, "GET"));
      return accept(kFunctionUsage, kSmallBodyBytes, std::move(name));
    }
  }
  return reject(error_response(http::status::not_found, "not_found",
                               fmt::format("no route for {} {}", http::to_string(method),
                                           std::string_view(url->encoded_path()))));
}

asio::awaitable<Reply> Api::handle(const Plan& plan, Request request) {
  switch (static_cast<Route>(plan.route)) {
    case kNone:
      break;
    case kMetrics:
      co_return metrics();
    case kUsage:
    case kFunctionUsage:
      co_return co_await usage(plan, request);
    case kHealth:
      co_return json_response(http::status::ok, json{{"status", "ok"}});
    case kReady:
      if (server_ && server_->draining()) {
        co_return json_response(http::status::service_unavailable, json{{"status", "draining"}});
      }
      co_return json_response(http::status::ok, json{{"status", "ready"}});
    case kListFunctions: {
      json list = json::array();
      for (const auto& record : registry_.list()) list.push_back(view(*record));
      co_return json_response(http::status::ok, json{{"functions", std::move(list)}});
    }
    case kGetFunction: {
      auto record = registry_.get(plan.name);
      if (!record) {
        co_return error_response(Error::not_found("function " + plan.name + " does not exist"));
      }
      co_return json_response(http::status::ok, view(*record));
    }
    case kInvoke:
    case kHttpTrigger:
      co_return co_await invoke(plan, std::move(request));
    case kLogs:
      co_return co_await logs(plan, request);
    case kDeploy:
      co_return co_await deploy(plan, std::move(request));
    case kPatch:
      co_return co_await patch(plan, std::move(request));
    case kRollback:
      co_return co_await rollback(plan, std::move(request));
    case kDelete:
      co_return co_await remove(plan);
  }
  co_return error_response(http::status::internal_server_error, "internal", "unknown route");
}

asio::awaitable<Response> Api::deploy(const Plan& plan, Request request) {
  auto overrides = registry::overrides_from_query(query_params(request.target()));
  if (!overrides) co_return error_response(overrides.error());
  registry::DeployRequest deploy{plan.name, std::move(request.body()),
                                 std::string(request[http::field::content_type]),
                                 std::move(*overrides)};
  auto work = [this, deploy = std::move(deploy)] { return registry_.deploy(deploy); };
  auto change = co_await run_blocking(blocking_, std::move(work));
  if (!change) {
    if (change.error().code == Errc::kSystem) {
      spdlog::error("api: [fn={}] deploy failed: {}", plan.name, change.error().message);
    }
    co_return error_response(change.error());
  }
  const auto& record = *change->record;
  if (change->changed) {
    spdlog::info("api: [fn={}] deployed version {} (bundle {})", plan.name, record.active_version,
                 record.active().bundle_sha256.substr(0, 12));
  }
  if (change->changed && scheduler_) scheduler_->on_deployed(change->record);
  Response res =
      json_response(change->created ? http::status::created : http::status::ok, view(record));
  if (change->created) res.set(http::field::location, "/v1/functions/" + plan.name);
  co_return res;
}

asio::awaitable<Response> Api::patch(const Plan& plan, Request request) {
  auto body = parse_json(request.body(), "request body");
  if (!body) co_return error_response(body.error());
  if (!body->is_object()) {
    co_return error_response(Error::invalid("request body must be a JSON object of fields"));
  }
  auto work = [this, name = plan.name, patch = std::move(*body)] {
    return registry_.patch(name, patch);
  };
  auto change = co_await run_blocking(blocking_, std::move(work));
  if (!change) co_return error_response(change.error());
  if (change->changed) {
    spdlog::info("api: [fn={}] configuration changed, version {}", plan.name,
                 change->record->active_version);
    if (scheduler_) scheduler_->on_deployed(change->record);
  }
  co_return json_response(http::status::ok, view(*change->record));
}

asio::awaitable<Response> Api::rollback(const Plan& plan, Request request) {
  std::optional<int> to;
  for (const auto& [key, value] : query_params(request.target())) {
    if (key != "to") {
      co_return error_response(Error::invalid("unknown query parameter \"" + key + "\"", key));
    }
    int v = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    if (ec != std::errc() || end != value.data() + value.size() || v < 1) {
      co_return error_response(Error::invalid("to: must be a version number", "to"));
    }
    to = v;
  }
  if (!to) co_return error_response(Error::invalid("to: missing, as in ?to=2", "to"));
  auto work = [this, name = plan.name, v = *to] { return registry_.rollback(name, v); };
  auto change = co_await run_blocking(blocking_, std::move(work));
  if (!change) co_return error_response(change.error());
  spdlog::info("api: [fn={}] version {} is active", plan.name, change->record->active_version);
  if (change->changed && scheduler_) scheduler_->on_deployed(change->record);
  co_return json_response(http::status::ok, view(*change->record));
}

asio::awaitable<Response> Api::remove(const Plan& plan) {
  if (!registry_.get(plan.name)) {
    co_return error_response(Error::not_found("function " + plan.name + " does not exist"));
  }
  // Calls in flight finish first; new ones are refused while the function drains.
  if (scheduler_) co_await scheduler_->remove(plan.name, options_.delete_drain);
  auto work = [this, name = plan.name] { return registry_.remove(name); };
  auto status = co_await run_blocking(blocking_, std::move(work));
  if (!status) co_return error_response(status.error());
  spdlog::info("api: [fn={}] deleted", plan.name);
  // Its series go; its usage records stay, for billing.
  if (metrics_) metrics_->forget(plan.name);
  Response res{http::status::no_content, 11};
  res.set(http::field::server, "ember");
  co_return res;
}

asio::awaitable<Response> Api::invoke(const Plan& plan, Request request) {
  const std::string request_id = new_request_id();
  if (!scheduler_) {
    co_return error_response(http::status::service_unavailable, "unavailable",
                             "invocation is not enabled");
  }
  const bool trigger = plan.route == kHttpTrigger;
  scheduler::InvokeRequest call{
      request_id, trigger ? http_event(request, plan.name) : invoke_event(request.body()),
      trigger ? "http" : "invoke"};
  auto outcome = co_await scheduler_->invoke(plan.name, std::move(call));
  meter(plan.name, request_id, outcome);
  co_return invoke_response(outcome, request_id, trigger);
}

void Api::answered(const Plan& plan, unsigned status) {
  if (metrics_) metrics_->request(route_name(plan.route), status);
}

void Api::meter(const std::string& function, const std::string& request_id,
                const scheduler::InvokeOutcome& o) {
  using Kind = scheduler::InvokeOutcome::Kind;
  std::string outcome;
  switch (o.kind) {
    case Kind::kOk:
      outcome = "ok";
      break;
    case Kind::kFunctionError:
      outcome = "error";
      break;
    case Kind::kTimeout:
      outcome = "timeout";
      break;
    case Kind::kCrash:
      outcome = o.crash_type == "Runtime.OutOfMemory" ? "oom" : "crash";
      break;
    case Kind::kInitError:
      outcome = "error";
      break;
    case Kind::kThrottled:
      outcome = "throttled";
      break;
    case Kind::kNotFound:
    case Kind::kUnavailable:
      return;  // no function ran or was asked to
  }
  const bool ran = o.version > 0;
  using seconds = std::chrono::duration<double>;
  if (metrics_) {
    metrics_->invocation(
        metering::InvocationSample{function, outcome, o.cold, ran, seconds(o.queued).count(),
                                   seconds(o.init).count(), seconds(o.duration).count()});
  }
  if (usage_) {
    using std::chrono::duration_cast;
    using us = std::chrono::microseconds;
    metering::UsageRecord r;
    r.time_ms = system_clock().wall_ms();
    r.function = function;
    r.version = o.version;
    r.request_id = request_id;
    r.cold = o.cold;
    r.outcome = std::move(outcome);
    r.queue_us = duration_cast<us>(o.queued).count();
    r.init_us = duration_cast<us>(o.init).count();
    r.duration_us = duration_cast<us>(o.duration).count();
    r.billed_ms = ran ? metering::billed_ms(o.duration) : 0;
    r.memory_mb = o.memory_mb;
    r.peak_memory_bytes = o.memory_peak;
    usage_->append(std::move(r));
  }
}

Response Api::metrics() const {
  metering::DaemonState state;
  if (scheduler_) {
    for (const auto& record : registry_.list()) {
      json counts = scheduler_->instance_counts(record->name);
      state.functions.push_back(metering::FunctionState{
          record->name, counts.value("starting", 0), counts.value("idle", 0),
          counts.value("busy", 0), counts.value("stopping", 0)});
    }
    state.memory_used_mb = scheduler_->memory_used_mb();
    state.memory_budget_mb = scheduler_->memory_budget_mb();
    state.spawn_failures = scheduler_->spawn_failures();
  }
  if (server_) {
    state.open_connections = server_->connection_count();
    state.connections = server_->connections_accepted();
  }
  Response res{http::status::ok, 11};
  res.set(http::field::server, "ember");
  res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
  res.body() = metrics_ ? metrics_->render(state) : std::string();
  return res;
}

asio::awaitable<Response> Api::usage(const Plan& plan, const Request& request) {
  if (!usage_) {
    co_return error_response(http::status::service_unavailable, "unavailable",
                             "metering is not enabled");
  }
  const bool one = plan.route == kFunctionUsage;
  int64_t from = 0;
  int64_t to = system_clock().wall_ms() + 1;
  std::string function = one ? plan.name : "";
  int limit = 100;
  for (const auto& [key, value] : query_params(request.target())) {
    if (key == "from" || key == "to") {
      auto t = parse_time(value);
      if (!t) {
        co_return error_response(Error::invalid(
            key + ": expected seconds since the epoch, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ", key));
      }
      (key == "from" ? from : to) = *t;
    } else if (key == "function" && !one) {
      if (auto st = registry::validate_name(value); !st) co_return error_response(st.error());
      function = value;
    } else if (key == "limit" && one) {
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), limit);
      if (ec != std::errc() || end != value.data() + value.size() || limit < 1 || limit > 10000) {
        co_return error_response(Error::invalid("limit: must be 1..10000", "limit"));
      }
    } else {
      co_return error_response(Error::invalid("unknown query parameter \"" + key +
                                                  "\"; allowed: from, to, " +
                                                  (one ? "limit" : "function"),
                                              key));
    }
  }
  if (to <= from) co_return error_response(Error::invalid("to must be after from", "to"));
  json body{{"from", format_time(from)}, {"to", format_time(to)}};
  if (one) {
    if (!registry_.get(plan.name)) {
      co_return error_response(Error::not_found("function " + plan.name + " does not exist"));
    }
    auto work = [this, function, from, to, limit] {
      return usage_->records(function, from, to, limit);
    };
    auto records = co_await run_blocking(blocking_, std::move(work));
    if (!records) co_return error_response(records.error());
    json list = json::array();
    for (const auto& r : *records) list.push_back(r.to_json());
    body["records"] = std::move(list);
  }
  auto work = [this, function, from, to] { return usage_->totals(from, to, function); };
  auto totals = co_await run_blocking(blocking_, std::move(work));
  if (!totals) co_return error_response(totals.error());
  metering::FunctionUsage sum;
  sum.function = "*";
  json list = json::array();
  for (const auto& u : *totals) {
    list.push_back(u.to_json(prices_));
    sum.invocations += u.invocations;
    sum.errors += u.errors;
    sum.throttles += u.throttles;
    sum.cold_starts += u.cold_starts;
    sum.duration_us += u.duration_us;
    sum.billed_ms += u.billed_ms;
    sum.mb_ms += u.mb_ms;
  }
  if (one) {
    body["usage"] = list.empty() ? [&] {
      metering::FunctionUsage none;
      none.function = plan.name;
      return none.to_json(prices_);
    }()
                                 : list.front();
  } else {
    body["functions"] = std::move(list);
    json total = sum.to_json(prices_);
    total.erase("function");
    body["total"] = std::move(total);
  }
  if (prices_.per_gb_second > 0 || prices_.per_million_requests > 0) {
    body["prices"] = json{{"per_gb_second", prices_.per_gb_second},
                          {"per_million_requests", prices_.per_million_requests}};
  }
  co_return json_response(http::status::ok, body);
}

namespace {

constexpr auto kFollowHeartbeat = std::chrono::seconds(15);

// Follows a function's log: new lines as NDJSON as soon as they are captured, an empty line after
// 15 s of silence (so a client that went away is noticed), and the end when the daemon drains.
class LogFollower final : public BodyStream {
 public:
  LogFollower(asio::any_io_executor ex, worker::LogStore& logs, std::string name, uint64_t since,
              const HttpServer* server)
      : logs_(logs), name_(std::move(name)), next_(since), server_(server), wake_(ex) {
    subscription_ = logs_.ring(name_).subscribe([this] { wake_.cancel(); });
  }
  ~LogFollower() override { logs_.unsubscribe(name_, subscription_); }

  asio::awaitable<std::optional<std::string>> next() override {
    const auto quiet_since = std::chrono::steady_clock::now();
    while (!(server_ && server_->draining())) {
      bool truncated = false;
      auto lines = logs_.ring(name_).read(next_, 1000, truncated);
      if (!lines.empty()) {
        std::string out;
        if (truncated) out += json{{"truncated", true}}.dump() + "\n";
        for (const auto& line : lines) out += line.to_json().dump() + "\n";
        next_ = lines.back().seq + 1;
        co_return out;
      }
      if (std::chrono::steady_clock::now() - quiet_since >= kFollowHeartbeat) co_return "\n";
      wake_.expires_after(std::chrono::seconds(1));
      co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    co_return std::nullopt;
  }

 private:
  worker::LogStore& logs_;
  std::string name_;
  uint64_t next_;
  const HttpServer* server_;
  asio::steady_timer wake_;
  uint64_t subscription_ = 0;
};

}  // namespace

asio::awaitable<Reply> Api::logs(const Plan& plan, const Request& request) {
  if (!registry_.get(plan.name)) {
    co_return error_response(Error::not_found("function " + plan.name + " does not exist"));
  }
  uint64_t since = 0;
  size_t limit = 1000;
  bool follow = false;
  for (const auto& [key, value] : query_params(request.target())) {
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    const bool number = ec == std::errc() && end == value.data() + value.size();
    if (key == "since" && number) {
      since = v;
    } else if (key == "limit" && number && v >= 1 && v <= 10000) {
      limit = static_cast<size_t>(v);
    } else if (key == "follow" && (value == "1" || value == "true" || value == "0")) {
      follow = value != "0";
    } else {
      co_return error_response(Error::invalid(
          "query parameter \"" + key + "\" must be since=SEQ, limit=1..10000 or follow=1", key));
    }
  }
  if (!logs_) co_return error_response(http::status::service_unavailable, "unavailable", "no logs");
  if (follow) {
    Response head{http::status::ok, 11};
    head.set(http::field::server, "ember");
    head.set(http::field::content_type, "application/x-ndjson");
    auto ex = co_await asio::this_coro::executor;
    co_return Reply(std::move(head),
                    std::make_unique<LogFollower>(ex, *logs_, plan.name, since, server_));
  }
  json lines = json::array();
  bool truncated = false;
  auto& ring = logs_->ring(plan.name);
  for (const auto& line : ring.read(since, limit, truncated)) lines.push_back(line.to_json());
  uint64_t next =
      lines.empty() ? std::max(since, ring.next_seq()) : lines.back()["seq"].get<uint64_t>() + 1;
  co_return json_response(
      http::status::ok,
      json{{"lines", std::move(lines)}, {"next", next}, {"truncated", truncated}});
}

}  // namespace ember::gateway
