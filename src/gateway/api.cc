#include "ember/gateway/api.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio/use_awaitable.hpp>
#include <boost/container/small_vector.hpp>
#include <boost/url/parse.hpp>
#include <charconv>

#include "console.h"
#include "ember/gateway/auth.h"
#include "ember/gateway/blocking.h"
#include "ember/gateway/sigv4.h"
#include "invocation.h"
#include "routes.h"

namespace ember::gateway {

namespace asio = boost::asio;
namespace urls = boost::urls;
using nlohmann::json;

namespace {

constexpr uint64_t kSmallBodyBytes = 64 * 1024;

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
    case kConsole:
      return "console";
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
    case kKvList:
      return "kv_list";
    case kKvItem:
      return "kv_item";
    case kKeys:
      return "keys";
    case kKey:
      return "key";
    case kLambdaInvoke:
      return "lambda_invoke";
    case kLambdaList:
      return "lambda_list";
    case kLambdaCreate:
      return "lambda_create";
    case kLambdaGet:
      return "lambda_get";
    case kLambdaDelete:
      return "lambda_delete";
    case kLambdaUpdateCode:
      return "lambda_update_code";
    case kAliases:
      return "aliases";
    case kAlias:
      return "alias";
    case kLambdaAliases:
      return "lambda_aliases";
    case kLambdaAlias:
      return "lambda_alias";
    case kLambdaVersions:
      return "lambda_versions";
    case kInvokeAsync:
      return "invoke_async";
    case kInvocation:
      return "invocation";
    case kDeadLetters:
      return "dead_letters";
    case kRedrive:
      return "redrive";
  }
  return "none";
}

// A method the route does not take, in Ember's error format or (`lambda`) Lambda's.
Response method_not_allowed(http::verb method, std::string_view allow, bool lambda = false) {
  const std::string message =
      fmt::format("method {} is not allowed here; allowed: {}", http::to_string(method), allow);
  Response res =
      lambda ? lambda_error(http::status::method_not_allowed, "UnknownOperationException", message)
             : error_response(http::status::method_not_allowed, "method_not_allowed", message);
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

// Routes whose Plan::name is a function that must exist (a deploy makes it; the console's and
// the KV store's names are other things).
bool names_a_function(Route route) {
  switch (route) {
    case kGetFunction:
    case kPatch:
    case kDelete:
    case kRollback:
    case kLogs:
    case kKeys:
    case kKey:
    case kFunctionUsage:
    case kAliases:
    case kAlias:
    case kDeadLetters:
    case kRedrive:
    case kLambdaGet:
    case kLambdaDelete:
    case kLambdaUpdateCode:
    case kLambdaAliases:
    case kLambdaAlias:
    case kLambdaVersions:
      return true;
    default:
      return false;
  }
}

}  // namespace

bool needs_token(const registry::FunctionRecord& record, std::string_view qualifier) {
  auto protected_version = [&](int number) {
    const auto* v = record.find(number);
    return v && v->config.auth == "token";
  };
  if (protected_version(record.active_version)) return true;
  if (qualifier.empty() || qualifier == "$LATEST") return false;
  if (qualifier.find_first_not_of("0123456789") == std::string_view::npos) {
    // A version by number is not published: only its active version is open to everyone.
    return qualifier != std::to_string(record.active_version);
  }
  auto alias = record.aliases.find(qualifier);
  return alias != record.aliases.end() && (protected_version(alias->second.version) ||
                                           protected_version(alias->second.canary_version));
}

Result<PageQuery> page_query(std::string_view target, size_t fallback, size_t max) {
  PageQuery page{fallback, {}};
  for (const auto& [key, value] : query_params(target)) {
    if (key == "limit") {
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), page.limit);
      if (ec != std::errc() || end != value.data() + value.size() || page.limit < 1 ||
          page.limit > max) {
        return Error::invalid(fmt::format("limit: must be a number from 1 to {}", max), "limit");
      }
    } else if (key == "cursor") {
      page.cursor = value;
    } else {
      return Error::invalid("unknown query parameter \"" + key + "\"", key);
    }
  }
  return page;
}

std::vector<std::pair<std::string, std::string>> query_params(std::string_view target) {
  std::vector<std::pair<std::string, std::string>> out;
  auto url = urls::parse_origin_form(target);
  if (!url) return out;
  for (auto param : url->params()) out.emplace_back(param.key, param.value);
  return out;
}

Plan Api::plan(const RequestHeader& header, Transport transport) {
  const http::verb method = header.method();
  auto url = urls::parse_origin_form(header.target());
  if (!url) {
    return reject(
        error_response(http::status::bad_request, "bad_request", "malformed request target"));
  }
  boost::container::small_vector<std::string_view, 8> segments;  // no allocation per request
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

  // The web console's files: open, as they hold no secret (the page asks for the token).
  if (!segments.empty() && segments[0] == "console") {
    if (method != http::verb::get) return reject(method_not_allowed(method, "GET"));
    const std::string_view path = url->encoded_path();
    if (path == "/console") {  // its files are named relative to /console/
      Response moved{http::status::moved_permanently, 11};
      moved.set(http::field::location, "/console/");
      return reject(std::move(moved));
    }
    return accept(kConsole, kSmallBodyBytes,
                  std::string(path.substr(std::string_view("/console").size())));
  }

  // Invoke routes: open unless the function asks for a token ("auth": "token").
  const bool is_invoke = segments.size() == 4 && segments[0] == "v1" &&
                         segments[1] == "functions" && segments[3] == "invoke";
  const bool is_trigger = segments.size() >= 2 && segments[0] == "fn";
  if (is_invoke || is_trigger) {
    std::string_view segment = segments[is_invoke ? 2 : 1];
    std::string qualifier;
    bool async = false;
    if (is_trigger) {
      // /fn/NAME:QUALIFIER/... runs a version or an alias.
      if (size_t colon = segment.find(':'); colon != std::string_view::npos) {
        qualifier = std::string(segment.substr(colon + 1));
        segment = segment.substr(0, colon);
      }
    } else {
      for (auto& [key, value] : query_params(header.target())) {
        if (key == "version" || key == "alias") qualifier = std::move(value);
        if (key == "mode" && value != "sync" && value != "async") {
          return reject(error_response(
              Error::invalid("mode: must be sync or async, got \"" + value + "\"", "mode")));
        }
        async = async || (key == "mode" && value == "async");
      }
    }
    std::string name(segment);
    if (auto st = registry::validate_name(name); !st) return reject(error_response(st.error()));
    if (is_invoke && method != http::verb::post) return reject(method_not_allowed(method, "POST"));
    auto record = registry_.get(name);
    if (!record) {
      return unknown_function(
          name, error_response(Error::not_found("function " + name + " does not exist")));
    }
    auto target = record->resolve(qualifier, canary_draw());
    if (!target) return reject(error_response(target.error()));
    if (needs_token(*record, qualifier) && transport == Transport::kTcp) {
      auto it = header.find(http::field::authorization);
      const bool allowed =
          it != header.end() &&
          (bearer_matches(it->value(), options_.admin_token) ||
           (keys_ && keys_->authorizes(bearer_token(it->value()).value_or(""), name)));
      if (!allowed) {
        return reject(unauthorized("function " + name +
                                   " needs a bearer token: one of its invoke keys, or the admin "
                                   "token"));
      }
    }
    Plan p = accept(is_invoke ? (async ? kInvokeAsync : kInvoke) : kHttpTrigger,
                    options_.max_body_bytes, std::move(name));
    // No qualifier: whichever version is active when the call runs.
    p.version = target->qualifier.empty() ? 0 : target->version;
    p.qualifier = std::move(target->qualifier);
    return p;
  }

  // The Lambda API: signed (SigV4) with a key of the function or the admin credential, or
  // unsigned for a function whose invoke is open.
  if (segments.size() == 4 && segments[0] == "2015-03-31" && segments[1] == "functions" &&
      segments[3] == "invocations") {
    if (method != http::verb::post)
      return reject(method_not_allowed(method, "POST", /*lambda=*/true));
    auto target = parse_lambda_function(segments[2]);
    if (!target || registry::validate_name(target->name).ok() == false) {
      return reject(lambda_error(http::status::bad_request, "InvalidParameterValueException",
                                 "FunctionName must name a function: NAME, NAME:QUALIFIER or "
                                 "its ARN, with NAME of [a-z0-9][a-z0-9-]{0,62}"));
    }
    auto record = registry_.get(target->name);
    if (!record) {
      return unknown_function(target->name,
                              lambda_error(http::status::not_found, "ResourceNotFoundException",
                                           "Function not found: " + target->name));
    }
    for (auto& [key, value] : query_params(header.target())) {
      if (key != "Qualifier") continue;
      if (!target->qualifier.empty() && target->qualifier != value) {
        return reject(lambda_error(http::status::bad_request, "InvalidParameterValueException",
                                   "The derived qualifier from the function name does not match "
                                   "the specified qualifier."));
      }
      target->qualifier = std::move(value);
    }
    auto resolved = record->resolve(target->qualifier, canary_draw());
    if (!resolved) {
      return reject(
          lambda_error(http::status::not_found, "ResourceNotFoundException",
                       fmt::format("Function not found: {}:{}", target->name, target->qualifier)));
    }
    auto it = header.find(http::field::authorization);
    if (it == header.end()) {
      if (needs_token(*record, target->qualifier) && transport == Transport::kTcp) {
        return reject(lambda_error(
            http::status::forbidden, "MissingAuthenticationTokenException",
            "function " + target->name + " needs requests signed with one of its invoke keys"));
      }
    } else {
      auto auth = sigv4::parse_authorization(it->value());
      if (!auth) {
        return reject(lambda_error(http::status::bad_request, "IncompleteSignatureException",
                                   auth.error().message));
      }
      if (auth->access_key_id != kAdminKeyId && !(keys_ && keys_->find(auth->access_key_id))) {
        return reject(lambda_error(http::status::forbidden, "UnrecognizedClientException",
                                   "The security token included in the request is invalid."));
      }
    }
    Plan p = accept(kLambdaInvoke, options_.max_body_bytes, std::move(target->name));
    p.version = resolved->qualifier.empty() ? 0 : resolved->version;
    p.qualifier = std::move(resolved->qualifier);
    return p;
  }
  // The rest of the Lambda API manages functions: the admin credential only (or the socket).
  // AWS CLI v2 lists with a trailing slash (/2015-03-31/functions/).
  if (segments.size() == 3 && segments[0] == "2015-03-31" && segments[2].empty()) {
    segments.pop_back();
  }
  if (segments.size() >= 2 && segments.size() <= 5 && segments[0] == "2015-03-31" &&
      segments[1] == "functions") {
    if (transport == Transport::kTcp) {
      auto it = header.find(http::field::authorization);
      if (it == header.end()) {
        return reject(lambda_error(http::status::forbidden, "MissingAuthenticationTokenException",
                                   "requests must be signed with the admin credential"));
      }
      auto auth = sigv4::parse_authorization(it->value());
      if (!auth) {
        return reject(lambda_error(http::status::bad_request, "IncompleteSignatureException",
                                   auth.error().message));
      }
      if (auth->access_key_id != kAdminKeyId) {
        const bool known = keys_ && keys_->find(auth->access_key_id);
        return reject(lambda_error(
            http::status::forbidden,
            known ? "AccessDeniedException" : "UnrecognizedClientException",
            known ? "an invoke key authorizes only invoking its function; this operation needs "
                    "the admin credential"
                  : "The security token included in the request is invalid."));
      }
    }
    // A zip in base64 inside JSON: a third larger than the bundle limit, and some room.
    const uint64_t code_limit = options_.max_bundle_bytes / 3 * 4 + (1 << 20);
    if (segments.size() == 2) {
      if (method == http::verb::get) return accept(kLambdaList, kSmallBodyBytes);
      if (method == http::verb::post) return accept(kLambdaCreate, code_limit);
      return reject(method_not_allowed(method, "GET, POST", /*lambda=*/true));
    }
    auto target = parse_lambda_function(segments[2]);
    if (!target || !registry::validate_name(target->name).ok()) {
      return reject(lambda_error(http::status::bad_request, "InvalidParameterValueException",
                                 "FunctionName must name a function: NAME or its ARN, with NAME "
                                 "of [a-z0-9][a-z0-9-]{0,62}"));
    }
    if (segments.size() == 3) {
      if (method == http::verb::get) return accept(kLambdaGet, kSmallBodyBytes, target->name);
      if (method == http::verb::delete_) {
        return accept(kLambdaDelete, kSmallBodyBytes, target->name);
      }
      return reject(method_not_allowed(method, "GET, DELETE", /*lambda=*/true));
    }
    if (segments.size() == 4 && segments[3] == "code") {
      if (method != http::verb::put)
        return reject(method_not_allowed(method, "PUT", /*lambda=*/true));
      return accept(kLambdaUpdateCode, code_limit, target->name);
    }
    if (segments.size() == 4 && (segments[3] == "aliases" || segments[3] == "versions")) {
      if (method != http::verb::get && method != http::verb::post) {
        return reject(method_not_allowed(method, "GET, POST", /*lambda=*/true));
      }
      return accept(segments[3] == "aliases" ? kLambdaAliases : kLambdaVersions, kSmallBodyBytes,
                    target->name);
    }
    if (segments.size() == 5 && segments[3] == "aliases") {
      if (method != http::verb::get && method != http::verb::put && method != http::verb::delete_) {
        return reject(method_not_allowed(method, "GET, PUT, DELETE", /*lambda=*/true));
      }
      return accept(kLambdaAlias, kSmallBodyBytes, target->name);
    }
    return reject(lambda_error(http::status::not_found, "UnknownOperationException",
                               fmt::format("no Lambda operation at {} {}", http::to_string(method),
                                           std::string_view(url->encoded_path()))));
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

  if (segments.size() == 3 && segments[1] == "invocations") {
    if (method != http::verb::get) return reject(method_not_allowed(method, "GET"));
    return accept(kInvocation, kSmallBodyBytes);
  }
  if (segments.size() == 2 && segments[1] == "usage") {
    if (method != http::verb::get) return reject(method_not_allowed(method, "GET"));
    return accept(kUsage, kSmallBodyBytes);
  }
  if (segments.size() >= 3 && segments[1] == "kv") {
    // A namespace is a function's name, checked like one (raw: it never needs encoding).
    std::string ns(segments[2]);
    if (auto st = kv::check_namespace(ns); !st) return reject(error_response(st.error()));
    if (segments.size() == 3) {
      if (method != http::verb::get) return reject(method_not_allowed(method, "GET"));
      return accept(kKvList, kSmallBodyBytes, std::move(ns));
    }
    switch (method) {
      case http::verb::get:
      case http::verb::delete_:
        return accept(kKvItem, kSmallBodyBytes, std::move(ns));
      case http::verb::put:
        return accept(kKvItem, kv_ ? kv_->limits().max_value_bytes : kSmallBodyBytes,
                      std::move(ns));
      default:
        return reject(method_not_allowed(method, "GET, PUT, DELETE"));
    }
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
    if (segments.size() == 4 && segments[3] == "keys") {
      if (method != http::verb::get && method != http::verb::post) {
        return reject(method_not_allowed(method, "GET, POST"));
      }
      return accept(kKeys, kSmallBodyBytes, std::move(name));
    }
    if (segments.size() == 5 && segments[3] == "keys") {
      if (method != http::verb::delete_) return reject(method_not_allowed(method, "DELETE"));
      return accept(kKey, kSmallBodyBytes, std::move(name));
    }
    if (segments.size() == 4 && segments[3] == "dead-letters") {
      if (method != http::verb::get) return reject(method_not_allowed(method, "GET"));
      return accept(kDeadLetters, kSmallBodyBytes, std::move(name));
    }
    if (segments.size() == 5 && segments[3] == "dead-letters" && segments[4] == "redrive") {
      if (method != http::verb::post) return reject(method_not_allowed(method, "POST"));
      return accept(kRedrive, kSmallBodyBytes, std::move(name));
    }
    if (segments.size() == 4 && segments[3] == "aliases") {
      if (method != http::verb::get && method != http::verb::post) {
        return reject(method_not_allowed(method, "GET, POST"));
      }
      return accept(kAliases, kSmallBodyBytes, std::move(name));
    }
    if (segments.size() == 5 && segments[3] == "aliases") {
      if (method != http::verb::get && method != http::verb::put && method != http::verb::delete_) {
        return reject(method_not_allowed(method, "GET, PUT, DELETE"));
      }
      return accept(kAlias, kSmallBodyBytes, std::move(name));
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

Plan Api::unknown_function(const std::string& name, Response not_found) const {
  Plan p = reject(std::move(not_found));
  if (registry_.shared()) p.catch_up = name;
  return p;
}

asio::awaitable<void> Api::catch_up(const std::string& name) {
  // What another node changed reaches this one as a notification, a few milliseconds later:
  // until then a name made there is read again here (Registry::catch_up limits how often).
  // A named lambda: GCC 12 frees a temporary with captures in a co_await expression twice.
  auto work = [this, name] { return registry_.catch_up(name) != nullptr; };
  (void)co_await run_blocking(blocking_, std::move(work));
}

asio::awaitable<Reply> Api::handle(const Plan& plan, Request request) {
  if (names_a_function(static_cast<Route>(plan.route)) && registry_.shared() &&
      !registry_.get(plan.name)) {
    co_await catch_up(plan.name);
  }
  switch (static_cast<Route>(plan.route)) {
    case kNone:
      break;
    case kMetrics:
      co_return metrics();
    case kUsage:
    case kFunctionUsage:
      co_return co_await usage(plan, request);
    case kConsole: {
      auto it = request.find(http::field::if_none_match);
      co_return console_response(
          plan.name, it == request.end() ? std::string_view() : std::string_view(it->value()));
    }
    case kHealth:
      co_return json_response(http::status::ok, json{{"status", "ok"}});
    case kReady:
      if (server_ && server_->draining()) {
        co_return json_response(http::status::service_unavailable, json{{"status", "draining"}});
      }
      co_return json_response(http::status::ok, json{{"status", "ready"}});
    case kListFunctions:
      co_return list_functions(request);
    case kAliases:
    case kAlias:
      co_return co_await aliases(plan, request);
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
    case kInvokeAsync: {
      auto payload = invoke_event(request.body());
      if (!payload) co_return error_response(payload.error());
      co_return co_await send_event(plan, std::move(*payload), "api", false);
    }
    case kInvocation:
    case kDeadLetters:
    case kRedrive:
      co_return co_await event_routes(plan, request);
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
    case kKvList:
    case kKvItem:
      co_return co_await kv(plan, std::move(request));
    case kKeys:
    case kKey:
      co_return co_await keys(plan, request);
    case kLambdaInvoke:
      co_return co_await lambda_invoke(plan, std::move(request));
    case kLambdaList:
    case kLambdaCreate:
    case kLambdaGet:
    case kLambdaDelete:
    case kLambdaUpdateCode:
    case kLambdaVersions:
      co_return co_await lambda_functions(plan, std::move(request));
    case kLambdaAliases:
    case kLambdaAlias:
      co_return co_await lambda_aliases(plan, request);
  }
  co_return error_response(http::status::internal_server_error, "internal", "unknown route");
}

Response Api::too_large(const Plan& plan, std::string message) {
  switch (plan.route) {
    case kLambdaInvoke:
    case kLambdaCreate:
    case kLambdaUpdateCode:
      return lambda_error(http::status::payload_too_large, "RequestTooLargeException", message);
    default:
      return Application::too_large(plan, std::move(message));
  }
}

namespace {

// `text` as a JSON string: quoted, control characters escaped, bad UTF-8 replaced.
std::string log_quoted(std::string_view text) {
  return json(std::string(text)).dump(-1, ' ', false, json::error_handler_t::replace);
}

// What an error answer says, for the log: "code: message" from Ember's JSON error or Lambda's,
// else the start of the body; quoted and escaped, as it may echo what the client sent.
std::string error_summary(const Response& response) {
  std::string text;
  const json body = json::parse(response.body(), nullptr, false);
  if (body.is_object() && body.contains("error") && body["error"].is_object()) {
    const json& e = body["error"];
    text = e.value("code", std::string()) + ": " + e.value("message", std::string());
  } else if (body.is_object() && body.contains("message") && body["message"].is_string()) {
    const auto type = response["x-amzn-ErrorType"];
    text = std::string(type.empty() ? "error" : std::string_view(type)) + ": " +
           body["message"].get<std::string>();
  } else {
    text = response.body().substr(0, 160);
  }
  if (text.size() > 300) text.resize(300);
  return log_quoted(text);
}

}  // namespace

void Api::answered(const Plan& plan, const Response& response) {
  const unsigned status = response.result_int();
  if (metrics_) metrics_->request(route_name(plan.route), status);
  // What clients got wrong, Ember's answers only: on /fn/ a 4xx is usually the function's own.
  if (status < 400 || status >= 500 || plan.route == kHttpTrigger) return;
  uint64_t suppressed = 0;
  if (!client_errors_log_.allow(suppressed)) return;
  // A request refused before it had a route (kNone) is described by the error alone.
  spdlog::warn(
      "api: {}{}{} from {}: {}{}", status,
      plan.route == kNone ? std::string() : fmt::format(" on {}", route_name(plan.route)),
      plan.name.empty() ? std::string() : " [fn=" + log_quoted(plan.name) + "]", plan.peer,
      error_summary(response),
      suppressed ? fmt::format(" ({} similar messages suppressed)", suppressed) : std::string());
}

void Api::meter(const std::string& function, const std::string& request_id,
                const scheduler::InvokeOutcome& o) {
  using Kind = scheduler::InvokeOutcome::Kind;
  using metering::Outcome;
  Outcome outcome = Outcome::kOk;
  switch (o.kind) {
    case Kind::kOk:
      outcome = Outcome::kOk;
      break;
    case Kind::kFunctionError:
    case Kind::kInitError:
      outcome = Outcome::kError;
      break;
    case Kind::kTimeout:
      outcome = Outcome::kTimeout;
      break;
    case Kind::kCrash:
      outcome = o.crash_cause == worker::ExitCause::kOutOfMemory ? Outcome::kOom : Outcome::kCrash;
      break;
    case Kind::kThrottled:
      outcome = Outcome::kThrottled;
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
    r.outcome = outcome;
    r.queue_us = duration_cast<us>(o.queued).count();
    r.init_us = duration_cast<us>(o.init).count();
    r.duration_us = duration_cast<us>(o.duration).count();
    r.billed_ms = ran ? metering::billed_ms(o.duration) : 0;
    r.memory_mb = o.memory_mb;
    r.peak_memory_bytes = o.memory_peak;
    r.kv_reads = o.kv_reads;
    r.kv_writes = o.kv_writes;
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
  if (kv_) {
    const kv::Stats kv = kv_->store().stats();
    state.kv_writes = kv.writes;
    state.kv_commits = kv.commits;
  }
  if (events_) {
    const events::DispatcherStats e = events_->stats();
    state.events_queued = e.queued;
    state.events_running = e.running;
    state.events_accepted = e.accepted;
    state.events_refused = e.refused;
    state.events_attempts = e.attempts;
    state.events_retries = e.retries;
    state.events_succeeded = e.succeeded;
    state.events_failed = e.failed;
    state.events_dead = e.dead;
  }
  if (pool_) {
    const runtime::PoolStats p = pool_->stats();
    state.pool_waiting = static_cast<uint64_t>(p.waiting);
    state.pool_starting = static_cast<uint64_t>(p.starting);
    state.pool_memory_mb = static_cast<uint64_t>(p.memory_mb);
    state.pool_hits = p.hits;
    state.pool_misses = p.misses;
  }
  if (bytecode_) {
    state.bytecode_running = static_cast<uint64_t>(bytecode_->running());
    state.bytecode_modules = bytecode_->stored();
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

}  // namespace ember::gateway
