// The Lambda REST API on Ember's listener (docs/lambda.md): Invoke, as the AWS SDKs and CLI
// call it, authenticated by AWS Signature V4 with an invoke key or the admin credential.
#include <fmt/format.h>

#include <boost/asio/use_awaitable.hpp>
#include <boost/url/decode_view.hpp>

#include "ember/common/clock.h"
#include "ember/common/text.h"
#include "ember/gateway/api.h"
#include "ember/gateway/sigv4.h"
#include "invocation.h"
#include "routes.h"

namespace ember::gateway {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

constexpr size_t kTailBytes = 4096;

}  // namespace

Response lambda_error(http::status status, std::string_view type, std::string_view message) {
  Response res = json_response(
      status, json{{"Type", static_cast<unsigned>(status) >= 500 ? "Service" : "User"},
                   {"message", message},
                   {"Message", message}});
  res.set("x-amzn-ErrorType", type);
  return res;
}

Response signature_refusal(const Error& e) {
  const std::string type =
      e.field.empty()
          ? (e.code == Errc::kNotFound ? "AccessDeniedException" : "InvalidSignatureException")
          : e.field;
  return lambda_error(
      type == "IncompleteSignatureException" ? http::status::bad_request : http::status::forbidden,
      type, e.message);
}

std::optional<LambdaTarget> parse_lambda_function(std::string_view raw_segment) {
  std::string decoded;
  for (char c : boost::urls::decode_view(raw_segment)) decoded += c;
  LambdaTarget t;
  std::string_view name = decoded;
  constexpr std::string_view kArn = "arn:aws:lambda:";
  constexpr std::string_view kFunction = ":function:";
  if (name.starts_with(kArn)) {
    // arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
    size_t at = name.find(kFunction);
    if (at == std::string_view::npos) return std::nullopt;
    name.remove_prefix(at + kFunction.size());
  } else if (name.size() > 12 + kFunction.size() &&
             name.substr(0, 12).find_first_not_of("0123456789") == std::string_view::npos &&
             name.substr(12, kFunction.size()) == kFunction) {
    name.remove_prefix(12 + kFunction.size());  // ACCOUNT:function:NAME[:QUALIFIER]
  }
  if (size_t colon = name.find(':'); colon != std::string_view::npos) {
    t.qualifier = std::string(name.substr(colon + 1));
    name = name.substr(0, colon);
  }
  t.name = std::string(name);
  return t;
}

Status Api::check_signature(const Request& request, const std::string& function) const {
  auto it = request.find(http::field::authorization);
  if (it == request.end()) return {};  // plan() let an unsigned request through: none needed
  auto auth = sigv4::parse_authorization(it->value());
  if (!auth) return auth.error();
  std::string secret;
  if (auth->access_key_id == kAdminKeyId) {
    secret = options_.admin_token;
  } else if (auto key = keys_ ? keys_->find(auth->access_key_id) : std::nullopt) {
    if (function.empty()) {
      return Error::not_found(
          "an invoke key authorizes only invoking its function; this operation needs the admin "
          "credential");
    }
    if (key->first.function != function) {
      return Error::not_found(
          fmt::format("invoke key {} is not a key of function {}", auth->access_key_id, function));
    }
    secret = key->second;
  } else {
    Error e = Error::not_found("The security token included in the request is invalid.");
    e.field = "UnrecognizedClientException";
    return e;
  }
  sigv4::Request signed_request{
      http::to_string(request.method()), request.target(), {}, request.body()};
  for (const auto& field : request) {
    std::string name(field.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    signed_request.headers.emplace_back(std::move(name), std::string(field.value()));
  }
  return sigv4::verify(signed_request, *auth, secret, system_clock().wall_ms());
}

asio::awaitable<Response> Api::lambda_invoke(const Plan& plan, Request request) {
  const std::string request_id = new_request_id();
  if (auto st = check_signature(request, plan.name); !st) {
    co_return signature_refusal(st.error());
  }
  if (!scheduler_) {
    co_return lambda_error(http::status::service_unavailable, "ServiceException",
                           "invocation is not enabled");
  }
  const std::string type(request["X-Amz-Invocation-Type"]);
  if (!type.empty() && type != "RequestResponse" && type != "DryRun" && type != "Event") {
    co_return lambda_error(http::status::bad_request, "InvalidParameterValueException",
                           "X-Amz-Invocation-Type must be RequestResponse, Event or DryRun");
  }
  auto payload = lambda_event(request.body());
  if (!payload) {
    co_return lambda_error(http::status::bad_request, "InvalidRequestContentException",
                           payload.error().message);
  }
  if (type == "Event") {
    // Lambda's asynchronous invocation: 202 once the event is durably queued.
    co_return co_await send_event(plan, std::move(*payload), "lambda", true);
  }
  // The qualifier (NAME:QUALIFIER or ?Qualifier=) was resolved to a version when the request
  // was routed: plan.version, with plan.qualifier as the caller named it.
  if (type == "DryRun") {
    Response res{http::status::no_content, 11};
    res.set("x-amzn-RequestId", request_id);
    co_return res;
  }
  const bool tail = request["X-Amz-Log-Type"] == "Tail";
  const uint64_t log_from = tail && logs_ ? logs_->ring(plan.name).next_seq() : 0;
  scheduler::InvokeRequest call{request_id, std::move(*payload), "invoke", plan.version,
                                plan.qualifier};
  auto outcome = co_await scheduler_->invoke(plan.name, std::move(call));
  meter(plan.name, request_id, outcome);

  using Kind = scheduler::InvokeOutcome::Kind;
  Response res;
  switch (outcome.kind) {
    case Kind::kOk:
      res = Response{http::status::ok, 11};
      res.set(http::field::content_type,
              outcome.content_type.empty() ? "application/json" : outcome.content_type);
      res.body() = std::move(outcome.body);
      break;
    case Kind::kThrottled:
      res = lambda_error(http::status::too_many_requests, "TooManyRequestsException", outcome.body);
      break;
    case Kind::kNotFound:
      co_return lambda_error(http::status::not_found, "ResourceNotFoundException",
                             "Function not found: " + plan.name);
    case Kind::kUnavailable:
      co_return lambda_error(http::status::service_unavailable, "ServiceException", outcome.body);
    default:
      res = Response{http::status::ok, 11};
      res.set(http::field::content_type, "application/json");
      res.set("X-Amz-Function-Error", "Unhandled");
      res.body() = function_error_object(outcome, request_id)
                       .dump(-1, ' ', false, json::error_handler_t::replace);
      break;
  }
  res.set(http::field::server, "ember");
  res.set("x-amzn-RequestId", request_id);
  int executed = outcome.version > 0 ? outcome.version : plan.version;
  if (executed == 0) {
    auto record = registry_.get(plan.name);
    executed = record ? record->active_version : 0;
  }
  res.set("X-Amz-Executed-Version", std::to_string(executed));
  if (tail && logs_) {
    bool truncated = false;
    std::string text;
    for (const auto& line : logs_->ring(plan.name).read(log_from, 100000, truncated)) {
      if (line.request_id != request_id) continue;
      text += line.text;
      text += '\n';
    }
    if (text.size() > kTailBytes) text.erase(0, text.size() - kTailBytes);
    res.set("X-Amz-Log-Result", base64_encode(text));
  }
  co_return res;
}

}  // namespace ember::gateway
