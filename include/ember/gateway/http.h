// HTTP message types shared by the server and the routes, and the one error format.
#pragma once

#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "ember/common/result.h"

namespace ember::gateway {

namespace http = boost::beast::http;

using Request = http::request<http::string_body>;
using RequestHeader = http::request_header<>;
using Response = http::response<http::string_body>;

// A JSON response with Ember's standard headers.
Response json_response(http::status status, const nlohmann::json& body);

// {"error": {"code": CODE, "message": MESSAGE[, "field": FIELD]}}
Response error_response(http::status status, std::string_view code, std::string_view message,
                        std::string_view field = {});

// Maps an Error from a lower layer to its status and error response.
Response error_response(const Error& error);

// The reason phrase for a status from 100 to 599: the registered one, or the name of its class
// for a code without one (never Beast's "<unknown-status>").
std::string_view reason_phrase(unsigned status);

// The status line and the header fields of `res` as they go on the wire, ending with the empty
// line: what Beast's serializer writes, in one piece (it gathers every field as a buffer of its
// own). For a response whose body goes unchanged after it: not a chunked one.
std::string wire_head(const Response& res);

}  // namespace ember::gateway
