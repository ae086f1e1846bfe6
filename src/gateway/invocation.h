// Turning HTTP requests into events and scheduler outcomes into HTTP responses, for the invoke
// route and the HTTP trigger.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "ember/common/result.h"
#include "ember/gateway/http.h"
#include "ember/scheduler/scheduler.h"

namespace ember::gateway {

// A random request id in UUID form (8-4-4-4-12 hex digits).
std::string new_request_id();

// The event for /invoke: the body when it is JSON, else the body as a JSON string; an empty
// body is the empty object. Bytes that are neither JSON nor UTF-8 text are Errc::kInvalid.
Result<std::string> invoke_event(std::string_view body);
// The event of Lambda's Invoke: the body, which must be JSON, or {} when empty; else
// Errc::kInvalid with Lambda's message.
Result<std::string> lambda_event(std::string_view body);

// A uniform draw in [0, 1), for the canary split of an alias.
double canary_draw();

// What the event of an HTTP trigger says about the call besides the request.
struct TriggerContext {
  std::string_view request_id;
  std::string_view source_ip;
  int64_t wall_ms = 0;  // when the request arrived
};

// The event for /fn/{name}/...: Lambda's function URL event (payload format 2.0), plus Ember's
// `method`, `path` (what follows /fn/{name}, decoded, starting with '/') and `query`.
std::string http_event(const Request& request, const TriggerContext& context);

// The folder an HTTP trigger's pages live in, from the request target /fn/NAME[:QUALIFIER]/...:
// "/fn/NAME[:QUALIFIER]/", as sent (percent-encoding kept).
std::string trigger_root(std::string_view target);

// The response for an outcome, with Ember's X-Ember-* headers. For the HTTP trigger (`http`),
// a value with a statusCode is sent as a function URL sends it ({statusCode, headers,
// multiValueHeaders, cookies, body, isBase64Encoded}); any other value as 200 JSON. A value that
// cannot be sent is a 502 whose reason goes to `problem`; a function's error is a 502 that
// names the request id and nothing of the error.
Response invoke_response(scheduler::InvokeOutcome outcome, std::string_view request_id, bool http,
                         std::string* problem = nullptr);

// An error the function threw, or what ended it (a timeout, a crash), as Lambda's runtimes
// report it: {"errorType", "errorMessage", ...}. For outcomes other than kOk.
nlohmann::json function_error_object(const scheduler::InvokeOutcome& outcome,
                                     std::string_view request_id);

}  // namespace ember::gateway
