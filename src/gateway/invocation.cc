#include "invocation.h"

#include <fmt/format.h>
#include <sys/random.h>

#include <boost/url/decode_view.hpp>
#include <boost/url/parse.hpp>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "ember/common/text.h"
#include "ember/metering/usage.h"

namespace ember::gateway {

namespace urls = boost::urls;
using nlohmann::json;
using Kind = scheduler::InvokeOutcome::Kind;

std::string new_request_id() {
  // Unique, not secret: a per-thread generator seeded once from the kernel.
  thread_local std::mt19937_64 rng = [] {
    uint64_t seed = 0;
    if (::getrandom(&seed, sizeof seed, 0) != sizeof seed) seed = std::random_device{}();
    return std::mt19937_64(seed);
  }();
  const uint64_t a = rng(), b = rng();
  return fmt::format("{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}", a >> 32, (a >> 16) & 0xffff,
                     a & 0x0fff, ((b >> 48) & 0x3fff) | 0x8000, b & 0xffffffffffffULL);
}

std::string invoke_event(std::string_view body) {
  if (body.empty()) return "{}";
  if (json::accept(body)) return std::string(body);
  return json(std::string(body)).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string http_event(const Request& request, std::string_view function) {
  json query = json::object();
  std::string path = "/";
  if (auto url = urls::parse_origin_form(request.target())) {
    for (auto p : url->params()) query[p.key] = p.value;
    // Everything after "/fn/<name>".
    std::string_view encoded = url->encoded_path();
    std::string_view prefix_end = encoded.substr(std::min(encoded.size(), 4 + function.size()));
    urls::decode_view decoded(urls::pct_string_view(prefix_end.empty() ? "/" : prefix_end));
    path.assign(decoded.begin(), decoded.end());
    if (path.empty() || path.front() != '/') path.insert(path.begin(), '/');
  }
  json headers = json::object();
  for (const auto& field : request) {
    std::string name(field.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string value(field.value());
    if (headers.contains(name)) {
      headers[name] = headers[name].get<std::string>() + ", " + value;
    } else {
      headers[name] = value;
    }
  }
  const std::string& body = request.body();
  const bool binary = !is_valid_utf8(body);
  json event{{"method", std::string(request.method_string())},
             {"path", path},
             {"query", std::move(query)},
             {"headers", std::move(headers)},
             {"body", binary ? base64_encode(body) : body},
             {"isBase64Encoded", binary}};
  return event.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

std::string millis(std::chrono::nanoseconds d) {
  return fmt::format("{:.3f}", std::chrono::duration<double, std::milli>(d).count());
}

void set_timing(Response& res, const scheduler::InvokeOutcome& o, std::string_view request_id) {
  res.set("X-Ember-Request-Id", request_id);
  if (o.version > 0) {
    res.set("X-Ember-Start", o.cold ? "cold" : "warm");
    res.set("X-Ember-Version", std::to_string(o.version));
    res.set("X-Ember-Duration-Ms", millis(o.duration));
    res.set("X-Ember-Billed-Ms", std::to_string(metering::billed_ms(o.duration)));
    if (o.cold) res.set("X-Ember-Init-Ms", millis(o.init));
  }
}

// An HTTP-trigger value shaped as a response, or nullopt to send the value as JSON.
std::optional<Response> shaped_response(const std::string& value) {
  json v = json::parse(value, nullptr, false);
  if (!v.is_object() || !v.contains("statusCode") || !v["statusCode"].is_number_integer()) {
    return std::nullopt;
  }
  const int status = v["statusCode"].get<int>();
  if (status < 100 || status > 599) return std::nullopt;
  Response res{static_cast<http::status>(status), 11};
  res.set(http::field::server, "ember");
  bool has_type = false;
  if (v.contains("headers") && v["headers"].is_object()) {
    for (auto it = v["headers"].begin(); it != v["headers"].end(); ++it) {
      std::string text = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
      // Header injection: values with line breaks are dropped.
      if (text.find_first_of("\r\n") != std::string::npos ||
          it.key().find_first_of("\r\n: ") != std::string::npos || it.key().empty()) {
        continue;
      }
      has_type = has_type || boost::beast::iequals(it.key(), "content-type");
      res.set(it.key(), text);
    }
  }
  if (v.contains("body")) {
    const json& body = v["body"];
    std::string text = body.is_string() ? body.get<std::string>() : body.dump();
    if (v.value("isBase64Encoded", false) && body.is_string()) {
      auto decoded = base64_decode(text);
      if (!decoded) return std::nullopt;
      text = std::move(*decoded);
    }
    res.body() = std::move(text);
  }
  if (!has_type) res.set(http::field::content_type, "application/json");
  return res;
}

}  // namespace

Response invoke_response(const scheduler::InvokeOutcome& o, std::string_view request_id,
                         bool http_trigger) {
  Response res;
  switch (o.kind) {
    case Kind::kOk:
      if (http_trigger && o.content_type.empty()) {
        if (auto shaped = shaped_response(o.body)) {
          res = std::move(*shaped);
          break;
        }
      }
      res = Response{http::status::ok, 11};
      res.set(http::field::server, "ember");
      res.set(http::field::content_type,
              o.content_type.empty() ? "application/json" : o.content_type);
      res.body() = o.body;
      break;
    case Kind::kFunctionError:
      res = Response{http::status::internal_server_error, 11};
      res.set(http::field::server, "ember");
      res.set(http::field::content_type, "application/json");
      res.set("X-Ember-Function-Error", "Unhandled");
      res.body() = o.body;
      break;
    case Kind::kTimeout:
      res = error_response(http::status::gateway_timeout, "timeout", o.body);
      break;
    case Kind::kCrash:
      if (o.crash_cause == worker::ExitCause::kOutOfMemory) {
        res = error_response(http::status::bad_gateway, "out_of_memory",
                             fmt::format("{}: {}", worker::error_type(*o.crash_cause), o.body));
      } else if (o.crash_cause == worker::ExitCause::kSandboxViolation) {
        res = error_response(http::status::bad_gateway, "sandbox_violation",
                             fmt::format("{}: {}", worker::error_type(*o.crash_cause), o.body));
      } else {
        res = error_response(http::status::bad_gateway, "worker_crashed", o.body);
      }
      if (o.crash_cause) {
        res.set("X-Ember-Function-Error", std::string(worker::error_type(*o.crash_cause)));
      }
      break;
    case Kind::kInitError: {
      json e = json::parse(o.body, nullptr, false);
      std::string message = e.is_object() ? fmt::format("{}: {}", e.value("errorType", "Error"),
                                                        e.value("errorMessage", ""))
                                          : o.body;
      res = error_response(http::status::bad_gateway, "init_error",
                           "the function failed to "
                           "initialize: " +
                               message);
      res.set("X-Ember-Function-Error", "Init");
      break;
    }
    case Kind::kThrottled:
      res = error_response(http::status::too_many_requests, "throttled", o.body);
      res.set(http::field::retry_after, "1");
      break;
    case Kind::kNotFound:
      res = error_response(http::status::not_found, "not_found", o.body);
      break;
    case Kind::kUnavailable:
      res = error_response(http::status::service_unavailable, "unavailable", o.body);
      res.set(http::field::retry_after, "1");
      break;
  }
  set_timing(res, o, request_id);
  return res;
}

}  // namespace ember::gateway
