// Turning HTTP requests into events and scheduler outcomes into HTTP responses, for the invoke
// route and the HTTP trigger.
#pragma once

#include <string>
#include <string_view>

#include "ember/gateway/http.h"
#include "ember/scheduler/scheduler.h"

namespace ember::gateway {

// A random request id in UUID form (8-4-4-4-12 hex digits).
std::string new_request_id();

// The event for /invoke: the body when it is JSON, else the body as a JSON string; an empty
// body is the empty object.
std::string invoke_event(std::string_view body);

// The event for /fn/{name}/...: {method, path, query, headers, body, isBase64Encoded}.
// `path` is what follows /fn/{name}, decoded, always starting with '/'.
std::string http_event(const Request& request, std::string_view function);

// The response for an outcome, with Ember's X-Ember-* headers. For the HTTP trigger (`http`),
// a successful value of the form {statusCode, headers, body, isBase64Encoded} becomes that
// response; any other value is sent as 200 JSON.
Response invoke_response(const scheduler::InvokeOutcome& outcome, std::string_view request_id,
                         bool http);

}  // namespace ember::gateway
