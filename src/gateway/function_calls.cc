// Function-to-function calls: a worker's INVOKE_REQUEST (context.invoke, docs/events.md) run
// as a call of the function it names, synchronously through the scheduler or as an
// asynchronous event, under the caller's "calls" grant and the call-depth limit.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "ember/common/clock.h"
#include "ember/common/json_fields.h"
#include "ember/gateway/api.h"
#include "invocation.h"

namespace ember::gateway {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

// The longest chain when there is no dispatcher to say otherwise.
constexpr int kDefaultMaxCallDepth = 16;
// An INVOKE_REPLY's meta stays far under the protocol's 64 KiB.
constexpr size_t kMaxMetaText = 8 * 1024;

std::string refusal(std::string_view type, std::string_view message) {
  return json{{"ok", false}, {"errorType", type}, {"errorMessage", message}}.dump(
      -1, ' ', false, json::error_handler_t::replace);
}

// Whether `config` lets its function call `target`.
bool granted(const registry::FunctionConfig& config, std::string_view target) {
  return std::any_of(config.calls.begin(), config.calls.end(),
                     [&](const std::string& name) { return name == "*" || name == target; });
}

}  // namespace

worker::InvokeHandler Api::function_calls(asio::any_io_executor executor) {
  return [this, executor](const worker::CallOrigin& origin, const json& meta, std::string body,
                          worker::InvokeReply reply) {
    FunctionCall call{std::string(origin.function), origin.version, std::string(origin.request_id),
                      origin.depth};
    auto target = meta.find("function");
    if (target != meta.end() && target->is_string()) call.target = target->get<std::string>();
    auto async = meta.find("async");
    call.async = async != meta.end() && async->is_boolean() && async->get<bool>();
    call.event = std::move(body);
    asio::co_spawn(
        executor,
        [this, call = std::move(call),
         reply = std::move(reply)]() mutable -> asio::awaitable<void> {
          std::pair<std::string, std::string> out = co_await function_call(std::move(call));
          reply(std::move(out.first), std::move(out.second));
        },
        asio::detached);
  };
}

asio::awaitable<std::pair<std::string, std::string>> Api::function_call(FunctionCall call) {
  using Reply = std::pair<std::string, std::string>;
  // NAME or NAME:QUALIFIER.
  std::string name = call.target, qualifier;
  if (auto colon = name.find(':'); colon != std::string::npos) {
    qualifier = name.substr(colon + 1);
    name.resize(colon);
  }
  if (auto valid = registry::validate_name(name);
      !valid || (call.target.find(':') != std::string::npos && qualifier.empty())) {
    co_return Reply{
        refusal(
            "InvalidParameterValueException",
            fmt::format("{} is not a function name, NAME or NAME:QUALIFIER",
                        json(call.target).dump(-1, ' ', false, json::error_handler_t::replace))),
        {}};
  }
  // The caller's version says whom it may call; a version deleted since is granted nothing.
  const auto caller = registry_.get(call.caller);
  const registry::Version* version = caller ? caller->find(call.caller_version) : nullptr;
  if (!version || !granted(version->config, name)) {
    co_return Reply{refusal("AccessDeniedException",
                            fmt::format("function {} may not call {}: add \"{}\" to \"calls\" in "
                                        "its function.json",
                                        call.caller, name, name)),
                    {}};
  }
  if (call.event.empty()) call.event = "{}";
  if (!accept_untrusted(call.event)) {
    co_return Reply{refusal("InvalidRequestContentException", "the event is not valid JSON"), {}};
  }
  const int depth = call.depth + 1;
  const int max_depth = events_ ? events_->options().max_call_depth : kDefaultMaxCallDepth;
  if (depth > max_depth) {
    spdlog::warn("api: [fn={}] request {}: a call of {} refused: {} calls deep, over {}",
                 call.caller, call.request_id, name, depth, max_depth);
    co_return Reply{
        refusal("RecursiveInvocationException",
                fmt::format("{} function-to-function calls led to this one, more than the {} "
                            "allowed: a loop?",
                            depth, max_depth)),
        {}};
  }
  const std::string source = "function:" + call.caller;
  if (registry_.shared() && !registry_.get(name)) co_await catch_up(name);

  if (call.async) {
    if (!events_) {
      co_return Reply{refusal("ServiceException", "asynchronous invocation is not enabled"), {}};
    }
    events::SendRequest send{name, qualifier, std::move(call.event), source, depth};
    auto sent = co_await events_->send(std::move(send));
    if (!sent) {
      const Error& e = sent.error();
      const std::string_view type = e.code == Errc::kUnavailable ? "TooManyRequestsException"
                                    : e.code == Errc::kNotFound  ? "ResourceNotFoundException"
                                    : e.code == Errc::kInvalid   ? "RecursiveInvocationException"
                                                                 : "ServiceException";
      co_return Reply{refusal(type, e.message), {}};
    }
    co_return Reply{json{{"ok", true}, {"id", *sent}}.dump(), {}};
  }

  if (!scheduler_) {
    co_return Reply{refusal("ServiceException", "invocation is not enabled"), {}};
  }
  const auto record = registry_.get(name);
  auto resolved = record ? record->resolve(qualifier, canary_draw())
                         : Result<registry::Target>(Error::not_found(""));
  if (!resolved) {
    co_return Reply{
        refusal("ResourceNotFoundException",
                qualifier.empty() ? fmt::format("Function not found: {}", name)
                                  : fmt::format("Function not found: {}:{}", name, qualifier)),
        {}};
  }
  const std::string request_id = new_request_id();
  if (logs_) {
    logs_->ring(name).append(logs::LogLine{
        0, system_clock().wall_ms(), "ember", request_id,
        fmt::format("INVOKE from {} (request {}, depth {})", call.caller, call.request_id, depth)});
  }
  scheduler::InvokeRequest request{request_id,
                                   std::move(call.event),
                                   "invoke",
                                   resolved->qualifier.empty() ? 0 : resolved->version,
                                   resolved->qualifier,
                                   depth};
  auto outcome = co_await scheduler_->invoke(name, std::move(request));
  meter(name, request_id, outcome);

  using Kind = scheduler::InvokeOutcome::Kind;
  switch (outcome.kind) {
    case Kind::kOk: {
      json meta{{"ok", true}, {"requestId", request_id}};
      if (!outcome.content_type.empty()) meta["contentType"] = outcome.content_type;
      co_return Reply{meta.dump(), std::move(outcome.body)};
    }
    case Kind::kThrottled:
      co_return Reply{refusal("TooManyRequestsException", outcome.body), {}};
    case Kind::kNotFound:
      co_return Reply{refusal("ResourceNotFoundException", "Function not found: " + name), {}};
    case Kind::kUnavailable:
      co_return Reply{refusal("ServiceException", outcome.body), {}};
    default:
      break;
  }
  // The callee failed: its error object, as Lambda's Invoke returns it with FunctionError.
  // The meta carries the type and the start of the message; the whole object is the body.
  const json error = function_error_object(outcome, request_id);
  auto text = [&](const char* key, std::string fallback) {
    auto it = error.find(key);
    std::string value = it != error.end() && it->is_string() ? it->get<std::string>() : fallback;
    if (value.size() > kMaxMetaText) value.resize(kMaxMetaText);
    return value;
  };
  json meta{{"ok", false},
            {"functionError", "Unhandled"},
            {"requestId", request_id},
            {"errorType", text("errorType", "Runtime.Unknown")},
            {"errorMessage", text("errorMessage", "")}};
  co_return Reply{meta.dump(-1, ' ', false, json::error_handler_t::replace),
                  error.dump(-1, ' ', false, json::error_handler_t::replace)};
}

}  // namespace ember::gateway
