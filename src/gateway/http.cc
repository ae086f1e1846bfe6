#include "ember/gateway/http.h"

#include <cerrno>

namespace ember::gateway {

using nlohmann::json;

Response json_response(http::status status, const json& body) {
  Response res{status, 11};
  res.set(http::field::server, "ember");
  res.set(http::field::content_type, "application/json");
  res.body() = body.dump(-1, ' ', false, json::error_handler_t::replace);
  res.body().push_back('\n');
  return res;
}

Response error_response(http::status status, std::string_view code, std::string_view message,
                        std::string_view field) {
  json error{{"code", code}, {"message", message}};
  if (!field.empty()) error["field"] = field;
  return json_response(status, json{{"error", std::move(error)}});
}

Response error_response(const Error& e) {
  http::status status = http::status::internal_server_error;
  std::string_view code = "internal";
  switch (e.code) {
    case Errc::kInvalid:
      status = http::status::bad_request;
      code = "bad_request";
      break;
    case Errc::kNotFound:
      status = http::status::not_found;
      code = "not_found";
      break;
    case Errc::kConflict:
      status = http::status::conflict;
      code = "conflict";
      break;
    case Errc::kTooLarge:
      status = http::status::payload_too_large;
      code = "payload_too_large";
      break;
    case Errc::kUnsupported:
      status = http::status::unsupported_media_type;
      code = "unsupported_media_type";
      break;
    case Errc::kUnavailable:
      status = http::status::service_unavailable;
      code = "unavailable";
      break;
    case Errc::kSystem:
      // The state directory's disk is full: the request may succeed once space returns.
      if (e.sys_errno == ENOSPC || e.sys_errno == EDQUOT) {
        status = http::status::insufficient_storage;
        code = "insufficient_storage";
      }
      break;
  }
  return error_response(status, code, e.message, e.field);
}

std::string wire_head(const Response& res) {
  const std::string_view reason = res.reason();
  size_t size = 16 + reason.size();
  for (const auto& field : res) size += field.name_string().size() + field.value().size() + 4;
  std::string out;
  out.reserve(size);
  out += "HTTP/";
  out += static_cast<char>('0' + res.version() / 10);
  out += '.';
  out += static_cast<char>('0' + res.version() % 10);
  out += ' ';
  out += std::to_string(res.result_int());
  out += ' ';
  out += reason;
  out += "\r\n";
  for (const auto& field : res) {
    out += field.name_string();
    out += ": ";
    out += field.value();
    out += "\r\n";
  }
  out += "\r\n";
  return out;
}

std::string_view reason_phrase(unsigned status) {
  switch (status) {
    case 103:
      return "Early Hints";
    case 418:
      return "I'm a teapot";
    case 425:
      return "Too Early";
    default:
      break;
  }
  std::string_view known = http::obsolete_reason(static_cast<http::status>(status));
  if (known != "<unknown-status>") return known;
  switch (status / 100) {
    case 1:
      return "Informational";
    case 2:
      return "Success";
    case 3:
      return "Redirection";
    case 4:
      return "Client Error";
    default:
      return "Server Error";
  }
}

}  // namespace ember::gateway
