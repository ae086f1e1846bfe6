#include "invocation.h"

#include <fmt/format.h>
#include <sys/random.h>

#include <algorithm>
#include <boost/url/decode_view.hpp>
#include <boost/url/parse.hpp>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "ember/common/crypto.h"
#include "ember/common/json_fields.h"
#include "ember/common/text.h"
#include "ember/metering/usage.h"

namespace ember::gateway {

namespace urls = boost::urls;
using nlohmann::json;
using Kind = scheduler::InvokeOutcome::Kind;

namespace {

// Unique, not secret: a per-thread generator seeded once from the kernel.
std::mt19937_64& generator() {
  thread_local std::mt19937_64 rng = [] {
    uint64_t seed = 0;
    if (::getrandom(&seed, sizeof seed, 0) != sizeof seed) seed = std::random_device{}();
    return std::mt19937_64(seed);
  }();
  return rng;
}

}  // namespace

double canary_draw() { return std::uniform_real_distribution<double>(0, 1)(generator()); }

std::string new_request_id() { return random_uuid(); }

namespace {

Error too_deep() {
  return Error::invalid(
      fmt::format("the event nests deeper than {} levels of arrays and objects", kMaxJsonDepth));
}

}  // namespace

Result<std::string> invoke_event(std::string_view body) {
  if (body.empty()) return std::string("{}");
  // json::accept builds nothing, so it is safe at any depth; only JSON is held to the limit.
  if (json::accept(body)) {
    if (json_depth(body) > kMaxJsonDepth) return too_deep();
    return std::string(body);
  }
  if (!is_valid_utf8(body)) {
    return Error::invalid(
        "the event is neither JSON nor UTF-8 text: send JSON, or text (binary data as base64)");
  }
  return json(std::string(body)).dump();
}

Result<std::string> lambda_event(std::string_view body) {
  if (body.empty()) return std::string("{}");
  if (json::accept(body)) {
    if (json_depth(body) > kMaxJsonDepth) return too_deep();
    return std::string(body);
  }
  return Error::invalid("Could not parse request body into json: the payload is not JSON");
}

namespace {

void append_joined(json& object, const std::string& key, std::string_view value) {
  auto it = object.find(key);
  if (it == object.end()) {
    object[key] = value;
  } else {
    it->get_ref<std::string&>().append(",").append(value);
  }
}

std::string_view trim_spaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string trigger_root(std::string_view target) {
  constexpr std::string_view kPrefix = "/fn/";
  std::string_view path = target.substr(0, target.find_first_of("?#"));
  if (path.substr(0, kPrefix.size()) != kPrefix) return std::string(kPrefix);
  path.remove_prefix(kPrefix.size());
  return std::string(kPrefix) + std::string(path.substr(0, path.find('/'))) + "/";
}

std::string http_event(const Request& request, const TriggerContext& context) {
  // The target was checked to be origin-form when the request was routed; it is parsed once.
  const auto url = urls::parse_origin_form(request.target());
  std::string_view raw_query;
  // rawPath is what follows /fn/NAME[:QUALIFIER], as sent (percent-encoding kept): the
  // segments after the first two, as routing saw them.
  std::string raw_path;
  json query = json::object();
  if (url) {
    if (url->has_query()) raw_query = url->encoded_query();
    size_t index = 0;
    for (auto segment : url->encoded_segments()) {
      if (index++ < 2) continue;
      raw_path.push_back('/');
      raw_path.append(segment.data(), segment.size());
    }
    if (!raw_query.empty()) {
      for (auto p : url->params()) append_joined(query, p.key, p.value);
    }
  }
  if (raw_path.empty()) raw_path = "/";
  std::string path;
  for (char c : urls::decode_view(urls::pct_string_view(raw_path))) path.push_back(c);

  json headers = json::object();
  json cookies = json::array();
  std::string name;
  for (const auto& field : request) {
    if (field.name() == http::field::cookie) {
      // Cookies travel in `cookies`, one entry each, not in `headers` (payload format 2.0).
      std::string_view list = field.value();
      while (!list.empty()) {
        const size_t semi = list.find(';');
        std::string_view cookie = trim_spaces(list.substr(0, semi));
        if (!cookie.empty()) cookies.push_back(cookie);
        if (semi == std::string_view::npos) break;
        list.remove_prefix(semi + 1);
      }
      continue;
    }
    name.assign(field.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    append_joined(headers, name, field.value());
  }
  const std::string method(request.method_string());
  json http_context{{"method", method},
                    {"path", raw_path},
                    {"protocol", request.version() == 10 ? "HTTP/1.0" : "HTTP/1.1"},
                    {"sourceIp", context.source_ip},
                    {"userAgent", std::string(request[http::field::user_agent])}};
  const std::string host(request[http::field::host]);
  json request_context{{"accountId", "anonymous"},
                       {"apiId", "ember"},
                       {"domainName", host},
                       {"domainPrefix", host.substr(0, host.find('.'))},
                       {"http", std::move(http_context)},
                       {"requestId", context.request_id},
                       {"routeKey", "$default"},
                       {"stage", "$default"},
                       {"time", format_utc(context.wall_ms / 1000, "%d/%b/%Y:%H:%M:%S +0000")},
                       {"timeEpoch", context.wall_ms}};
  json event{{"version", "2.0"},
             {"routeKey", "$default"},
             {"rawPath", raw_path},
             {"rawQueryString", raw_query},
             {"headers", std::move(headers)},
             {"requestContext", std::move(request_context)},
             {"isBase64Encoded", false},
             // Ember's own fields, kept beside Lambda's: the decoded path and the method.
             {"method", method},
             {"path", std::move(path)}};
  if (!cookies.empty()) event["cookies"] = std::move(cookies);
  if (!query.empty()) event["queryStringParameters"] = query;
  event["query"] = std::move(query);
  const std::string& body = request.body();
  if (!body.empty()) {
    const bool binary = !is_valid_utf8(body);
    event["body"] = binary ? base64_encode(body) : body;
    event["isBase64Encoded"] = binary;
  }
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

// RFC 9110 §5.6.2: a field name is a token.
bool is_token(std::string_view name) {
  if (name.empty()) return false;
  for (unsigned char c : name) {
    if (std::isalnum(c) == 0 &&
        std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

// Fields that frame the message or concern this connection: Ember sets them, never a function.
bool is_framing_field(std::string_view name) {
  for (std::string_view f : {"connection", "content-length", "keep-alive", "transfer-encoding",
                             "upgrade", "te", "trailer", "proxy-connection"}) {
    if (boost::beast::iequals(name, f)) return true;
  }
  return false;
}

// Fields by which a page could reach past its own function on the shared origin, where the
// console also lives (docs/console.md): a service worker's scope wider than the page's folder,
// and an opener policy that would keep a handle on a console window the page opened.
bool is_origin_field(std::string_view name) {
  for (std::string_view f : {"service-worker-allowed", "cross-origin-opener-policy"}) {
    if (boost::beast::iequals(name, f)) return true;
  }
  return false;
}

// Sets one header line of a shaped response, refusing what could split or reframe it.
Status add_header(Response& res, std::string_view name, const json& value) {
  std::string text;
  if (value.is_string()) {
    text = value.get<std::string>();
  } else if (value.is_number() || value.is_boolean()) {
    text = value.dump();
  } else {
    return Error::invalid(
        fmt::format("header {}: a value must be a string, number or boolean",
                    json(name).dump(-1, ' ', false, json::error_handler_t::replace)));
  }
  const auto control = [](unsigned char c) { return (c < 0x20 && c != '\t') || c == 0x7f; };
  if (!is_token(name) || std::any_of(text.begin(), text.end(), control)) {
    return Error::invalid(
        fmt::format("header {}: a name must be a token and a value must hold no control character",
                    json(name).dump(-1, ' ', false, json::error_handler_t::replace)));
  }
  if (is_framing_field(name)) return {};  // dropped, as function URLs do
  if (is_origin_field(name)) return {};   // dropped: the origin is shared with the console
  res.insert(name, text);
  return {};
}

// Adds the headers of `object` (name → value, or name → [values]).
Status add_headers(Response& res, const json& object, std::string_view what, bool& has_type) {
  if (!object.is_object()) return Error::invalid(std::string(what) + " must be an object");
  for (auto it = object.begin(); it != object.end(); ++it) {
    has_type = has_type || boost::beast::iequals(it.key(), "content-type");
    if (it.value().is_array()) {
      for (const auto& v : it.value()) {
        if (auto st = add_header(res, it.key(), v); !st) return st;
      }
    } else if (auto st = add_header(res, it.key(), it.value()); !st) {
      return st;
    }
  }
  return {};
}

// The response a function URL would send for a value, or why the value cannot be sent. A value
// that is not an object with a statusCode is sent as 200 JSON (nullopt).
Result<std::optional<Response>> shaped_response(const std::string& value) {
  json v = parse_untrusted(value);
  if (!v.is_object() || !v.contains("statusCode")) return std::optional<Response>();
  const json& code = v["statusCode"];
  // 1xx are interim answers, never a final one.
  if (!code.is_number_integer() || code.get<int64_t>() < 200 || code.get<int64_t>() > 599) {
    return Error::invalid("statusCode must be an integer from 200 to 599, got " +
                          code.dump(-1, ' ', false, json::error_handler_t::replace));
  }
  const unsigned status = code.get<unsigned>();
  Response res{static_cast<http::status>(status), 11};
  res.reason(reason_phrase(status));
  res.set(http::field::server, "ember");
  bool has_type = false;
  if (auto it = v.find("headers"); it != v.end() && !it->is_null()) {
    if (auto st = add_headers(res, *it, "headers", has_type); !st) return st.error();
  }
  if (auto it = v.find("multiValueHeaders"); it != v.end() && !it->is_null()) {
    if (auto st = add_headers(res, *it, "multiValueHeaders", has_type); !st) return st.error();
  }
  if (auto it = v.find("cookies"); it != v.end() && !it->is_null()) {
    if (!it->is_array()) return Error::invalid("cookies must be an array of strings");
    for (const auto& cookie : *it) {
      if (!cookie.is_string()) return Error::invalid("cookies must be an array of strings");
      if (auto st = add_header(res, "Set-Cookie", cookie); !st) return st.error();
    }
  }
  const bool base64 = v.contains("isBase64Encoded") && v["isBase64Encoded"].is_boolean() &&
                      v["isBase64Encoded"].get<bool>();
  if (auto it = v.find("body"); it != v.end() && !it->is_null()) {
    std::string text = it->is_string() ? it->get<std::string>()
                                       : it->dump(-1, ' ', false, json::error_handler_t::replace);
    if (base64) {
      auto decoded = base64_decode(text);
      if (!decoded) return Error::invalid("isBase64Encoded is true but body is not base64");
      text = std::move(*decoded);
    }
    res.body() = std::move(text);
  }
  if (status == 204 || status == 304) res.body().clear();  // they have no content
  if (!has_type) res.set(http::field::content_type, "application/json");
  return std::optional<Response>(std::move(res));
}

}  // namespace

Response invoke_response(scheduler::InvokeOutcome o, std::string_view request_id, bool http_trigger,
                         std::string* problem) {
  Response res;
  // On an HTTP trigger the client is the public: it learns that the function failed and the
  // request id to look for in the log, never the error's message or stack.
  const auto look_up = [request_id] {
    return fmt::format("; its log has the details under request id {}", request_id);
  };
  switch (o.kind) {
    case Kind::kOk:
      if (http_trigger && o.content_type.empty()) {
        auto shaped = shaped_response(o.body);
        if (!shaped) {
          if (problem) *problem = shaped.error().message;
          res = error_response(http::status::bad_gateway, "bad_response",
                               "the function returned a response that cannot be sent" + look_up());
          break;
        }
        if (*shaped) {
          res = std::move(**shaped);
          break;
        }
      }
      res = Response{http::status::ok, 11};
      res.set(http::field::server, "ember");
      res.set(http::field::content_type,
              o.content_type.empty() ? "application/json" : o.content_type);
      res.body() = std::move(o.body);
      break;
    case Kind::kFunctionError:
      if (http_trigger) {
        res = error_response(http::status::bad_gateway, "function_error",
                             "the function failed" + look_up());
      } else {
        res = Response{http::status::internal_server_error, 11};
        res.set(http::field::server, "ember");
        res.set(http::field::content_type, "application/json");
        res.body() = o.body;
      }
      res.set("X-Ember-Function-Error", "Unhandled");
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
      json e = parse_untrusted(o.body);
      std::string message = e.is_object() ? fmt::format("{}: {}", e.value("errorType", "Error"),
                                                        e.value("errorMessage", ""))
                                          : o.body;
      res = error_response(http::status::bad_gateway, "init_error",
                           http_trigger ? std::string("the function failed to initialize; its "
                                                      "log has the details")
                                        : "the function failed to initialize: " + message);
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

// An error thrown by the function, or what ended it, as Lambda's runtimes report it.
json function_error_object(const scheduler::InvokeOutcome& o, std::string_view request_id) {
  json body = parse_untrusted(o.body);
  switch (o.kind) {
    case Kind::kFunctionError:
    case Kind::kInitError:
      if (body.is_object()) {
        if (body.contains("stack") && !body.contains("stackTrace"))
          body["stackTrace"] = body["stack"];
        return body;
      }
      return json{{"errorType", "Runtime.Unknown"}, {"errorMessage", o.body}};
    case Kind::kTimeout:
      return json{{"errorType", "Sandbox.Timedout"},
                  {"errorMessage", fmt::format("RequestId: {} Error: Task timed out", request_id)}};
    case Kind::kCrash:
      return json{
          {"errorType", worker::error_type(o.crash_cause.value_or(worker::ExitCause::kExited))},
          {"errorMessage", fmt::format("RequestId: {} Error: {}", request_id, o.body)}};
    default:
      break;
  }
  return json{{"errorType", "Runtime.Unknown"}, {"errorMessage", o.body}};
}

}  // namespace ember::gateway
