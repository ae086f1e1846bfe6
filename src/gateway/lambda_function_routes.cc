// The Lambda API's function management on Ember's listener (docs/lambda.md): CreateFunction,
// GetFunction, ListFunctions, UpdateFunctionCode, DeleteFunction, PublishVersion,
// ListVersionsByFunction and the alias operations, in Lambda's JSON shapes, for the admin
// credential. A function made here is an Ember function like any other.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio/use_awaitable.hpp>
#include <ctime>

#include "ember/common/clock.h"
#include "ember/common/json_fields.h"
#include "ember/common/text.h"
#include "ember/gateway/api.h"
#include "ember/gateway/blocking.h"
#include "routes.h"

namespace ember::gateway {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

constexpr const char* kRegion = "us-east-1";
constexpr const char* kAccount = "000000000000";

std::string function_arn(std::string_view name) {
  return fmt::format("arn:aws:lambda:{}:{}:function:{}", kRegion, kAccount, name);
}

// Lambda's runtime identifier for an Ember runtime, and back.
std::string_view lambda_runtime(registry::Runtime r) {
  switch (r) {
    case registry::Runtime::kNode:
      return "nodejs20.x";
    case registry::Runtime::kPython:
      return "python3.11";
    case registry::Runtime::kProvided:
      return "provided";
  }
  return "provided";
}
std::optional<std::string> ember_runtime(std::string_view lambda) {
  if (lambda == "provided" || lambda == "provided.al2" || lambda == "provided.al2023") {
    return "provided";
  }
  if (lambda.starts_with("nodejs")) return "node";
  if (lambda.starts_with("python3")) return "python";
  return std::nullopt;
}

// "2020-04-10T19:06:32.563+0000"
std::string lambda_time(int64_t ms) {
  return fmt::format("{}.{:03}+0000", format_utc(ms / 1000, "%Y-%m-%dT%H:%M:%S"), ms % 1000);
}

std::string base64_of_hex(std::string_view hex) {
  std::string raw;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    raw += static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
  }
  return base64_encode(raw);
}

json configuration(const registry::FunctionRecord& record) {
  const registry::Version& v = record.active();
  const registry::FunctionConfig& c = v.config;
  return json{
      {"FunctionName", record.name},
      {"FunctionArn", function_arn(record.name)},
      {"Runtime", lambda_runtime(c.runtime)},
      {"Role", fmt::format("arn:aws:iam::{}:role/ember-function", kAccount)},
      {"Handler", c.handler},
      {"CodeSize", v.bundle_bytes},
      {"Description", ""},
      {"Timeout", (c.timeout_ms + 999) / 1000},
      {"MemorySize", c.memory_mb},
      {"LastModified", lambda_time(v.created_ms)},
      {"CodeSha256", base64_of_hex(v.bundle_sha256)},
      {"Version", "$LATEST"},
      {"Environment", {{"Variables", c.env}}},
      {"TracingConfig", {{"Mode", "PassThrough"}}},
      {"RevisionId", fmt::format("{}-{}", v.number, v.bundle_sha256.substr(0, 12))},
      {"State", "Active"},
      {"LastUpdateStatus", "Successful"},
      {"PackageType", "Zip"},
      {"Architectures", {"x86_64"}},
      {"EphemeralStorage", {{"Size", c.tmp_mb}}},
      {"LoggingConfig", {{"LogFormat", "Text"}, {"LogGroup", "/aws/lambda/" + record.name}}}};
}

// An alias in Lambda's AliasConfiguration shape.
json alias_configuration(const std::string& function, const registry::Alias& a) {
  json j{{"AliasArn", function_arn(function) + ":" + a.name},
         {"Name", a.name},
         {"FunctionVersion", std::to_string(a.version)},
         {"Description", a.description},
         {"RevisionId", std::to_string(a.updated_ms)}};
  if (a.canary_version > 0) {
    j["RoutingConfig"] = {
        {"AdditionalVersionWeights", {{std::to_string(a.canary_version), a.canary_weight}}}};
  }
  return j;
}

// A CreateAlias or UpdateAlias body applied to `a`; "$LATEST" is the active version (Ember
// versions every deploy, so an alias always names a number).
Status apply_alias_body(const json& body, const registry::FunctionRecord& record,
                        registry::Alias& a) {
  if (!body.is_object()) return Error::invalid("the request body must be a JSON object");
  auto version_of = [&](const json& v) -> Result<int> {
    if (!v.is_string()) return Error::invalid("a version is a string: \"3\" or \"$LATEST\"");
    const std::string text = v.get<std::string>();
    if (text == "$LATEST") return record.active_version;
    if (text.empty()) return Error::invalid("a version is a number or \"$LATEST\"");
    auto target = record.resolve(text, 0);
    if (!target || text.find_first_not_of("0123456789") != std::string::npos) {
      return Error::not_found(
          fmt::format("Function not found: {}:{}", function_arn(record.name), text));
    }
    return target->version;
  };
  if (auto it = body.find("Name"); it != body.end()) {
    if (!it->is_string()) return Error::invalid("Name must be a string");
    if (!a.name.empty() && it->get<std::string>() != a.name) {
      return Error::invalid("Name differs from the alias in the path");
    }
    a.name = it->get<std::string>();
  }
  if (auto it = body.find("FunctionVersion"); it != body.end()) {
    auto v = version_of(*it);
    if (!v) return v.error();
    a.version = *v;
  }
  if (auto it = body.find("Description"); it != body.end() && it->is_string()) {
    a.description = it->get<std::string>();
  }
  if (auto it = body.find("RoutingConfig"); it != body.end()) {
    a.canary_version = 0;
    a.canary_weight = 0;
    const json* weights = it->is_object() && it->contains("AdditionalVersionWeights")
                              ? &(*it)["AdditionalVersionWeights"]
                              : nullptr;
    if (weights && !weights->is_object()) {
      return Error::invalid("RoutingConfig.AdditionalVersionWeights must be an object");
    }
    if (weights && weights->size() > 1) {
      return Error::invalid("RoutingConfig.AdditionalVersionWeights takes one version");
    }
    if (weights && weights->size() == 1) {
      auto entry = weights->begin();
      auto v = version_of(json(entry.key()));
      if (!v) return v.error();
      if (!entry.value().is_number()) {
        return Error::invalid("RoutingConfig.AdditionalVersionWeights: a weight is a number");
      }
      a.canary_version = *v;
      a.canary_weight = entry.value().get<double>();
    }
  }
  if (a.name.empty()) return Error::invalid("Name is required");
  if (a.version == 0) return Error::invalid("FunctionVersion is required");
  return {};
}

Response invalid(std::string_view message) {
  return lambda_error(http::status::bad_request, "InvalidParameterValueException", message);
}

// What a failed alias change answers, in Lambda's types.
Response lambda_alias_error(const Error& e, const std::string& function, const std::string& alias) {
  switch (e.code) {
    case Errc::kNotFound:
      return lambda_error(http::status::not_found, "ResourceNotFoundException", e.message);
    case Errc::kConflict:
      return lambda_error(
          http::status::conflict, "ResourceConflictException",
          fmt::format("Alias already exists: {}:{}", function_arn(function), alias));
    case Errc::kInvalid:
      return invalid(e.message);
    default:
      spdlog::error("api: [fn={}] alias {}: {}", function, alias, e.message);
      return lambda_error(http::status::internal_server_error, "ServiceException", e.message);
  }
}

// Ember's deploy overrides for a CreateFunction body, and its zip.
Result<std::pair<json, std::string>> create_request(const json& body, std::string& name) {
  if (!body.is_object()) return Error::invalid("the request body must be a JSON object");
  if (!body.contains("FunctionName") || !body["FunctionName"].is_string()) {
    return Error::invalid("FunctionName is required");
  }
  auto target = parse_lambda_function(body["FunctionName"].get<std::string>());
  if (!target || !registry::validate_name(target->name).ok()) {
    return Error::invalid("FunctionName must be [a-z0-9][a-z0-9-]{0,62} on Ember");
  }
  name = target->name;
  // As on Lambda, invoking it needs credentials: an invoke key or the admin credential.
  json overrides = json{{"auth", "token"}};
  if (body.contains("Runtime")) {
    auto runtime = body["Runtime"].is_string() ? ember_runtime(body["Runtime"].get<std::string>())
                                               : std::nullopt;
    if (!runtime) {
      return Error::invalid(
          "Runtime must be provided, provided.al2, provided.al2023, nodejs*.x "
          "or python3.*");
    }
    overrides["runtime"] = *runtime;
  }
  if (body.contains("Handler") && body["Handler"].is_string())
    overrides["handler"] = body["Handler"];
  if (body.contains("MemorySize")) {
    if (!body["MemorySize"].is_number_integer()) return Error::invalid("MemorySize is in MB");
    overrides["memory_mb"] = body["MemorySize"];
  }
  if (body.contains("Timeout")) {
    if (!body["Timeout"].is_number_integer()) return Error::invalid("Timeout is in seconds");
    overrides["timeout_ms"] = body["Timeout"].get<int64_t>() * 1000;
  }
  if (body.contains("Environment") && body["Environment"].is_object() &&
      body["Environment"].contains("Variables")) {
    overrides["env"] = body["Environment"]["Variables"];
  }
  const json* code = body.contains("Code") ? &body["Code"] : nullptr;
  if (!code || !code->is_object() || !code->contains("ZipFile") ||
      !(*code)["ZipFile"].is_string()) {
    return Error::invalid(
        "Code.ZipFile (the zip, base64) is required; S3 and image code are "
        "not supported by Ember");
  }
  auto zip = base64_decode((*code)["ZipFile"].get<std::string>());
  if (!zip) return Error::invalid("Code.ZipFile is not base64");
  return std::make_pair(std::move(overrides), std::move(*zip));
}

}  // namespace

asio::awaitable<Response> Api::lambda_functions(const Plan& plan, Request request) {
  if (auto st = check_signature(request, ""); !st) co_return signature_refusal(st.error());
  auto not_found = [](std::string_view name) {
    return lambda_error(http::status::not_found, "ResourceNotFoundException",
                        "Function not found: " + function_arn(name));
  };
  switch (plan.route) {
    case kLambdaList: {
      std::string marker;
      size_t max_items = 50;
      for (const auto& [key, value] : query_params(request.target())) {
        if (key == "Marker") marker = value;
        if (key == "MaxItems") {
          int n = std::atoi(value.c_str());
          if (n < 1 || n > 10000) co_return invalid("MaxItems must be 1 to 10000");
          max_items = static_cast<size_t>(std::min(n, 50));
        }
      }
      auto records = registry_.list();
      std::sort(records.begin(), records.end(),
                [](const auto& a, const auto& b) { return a->name < b->name; });
      json functions = json::array();
      std::string next;
      for (const auto& r : records) {
        if (!marker.empty() && r->name <= marker) continue;
        if (functions.size() == max_items) {
          next = functions.back()["FunctionName"];
          break;
        }
        functions.push_back(configuration(*r));
      }
      json body{{"Functions", std::move(functions)}};
      if (!next.empty()) body["NextMarker"] = next;
      co_return json_response(http::status::ok, body);
    }
    case kLambdaGet: {
      auto record = registry_.get(plan.name);
      if (!record) co_return not_found(plan.name);
      co_return json_response(
          http::status::ok,
          json{{"Configuration", configuration(*record)},
               {"Code", {{"RepositoryType", "Ember"}, {"Location", "/v1/functions/" + plan.name}}},
               {"Tags", json::object()}});
    }
    case kLambdaVersions: {
      // Ember makes a version on every change, so PublishVersion publishes nothing new: it
      // answers with the active version, as Lambda does for unchanged code.
      auto record = registry_.get(plan.name);
      if (!record) co_return not_found(plan.name);
      auto numbered = [&](const registry::Version& v) {
        registry::FunctionRecord view = *record;
        view.active_version = v.number;
        json c = configuration(view);
        c["Version"] = std::to_string(v.number);
        c["FunctionArn"] = function_arn(record->name) + ":" + std::to_string(v.number);
        return c;
      };
      if (request.method() == http::verb::post) {
        co_return json_response(http::status::created, numbered(record->active()));
      }
      json versions = json::array({configuration(*record)});
      for (const auto& v : record->versions) versions.push_back(numbered(v));
      co_return json_response(http::status::ok, json{{"Versions", std::move(versions)}});
    }
    case kLambdaDelete: {
      if (!registry_.get(plan.name)) co_return not_found(plan.name);
      Response removed = co_await remove(plan);
      if (removed.result() != http::status::no_content) {
        co_return lambda_error(http::status::conflict, "ResourceConflictException", removed.body());
      }
      Response res{http::status::no_content, 11};
      res.set(http::field::server, "ember");
      co_return res;
    }
    case kLambdaCreate:
    case kLambdaUpdateCode: {
      auto body = parse_untrusted(request.body());
      std::string name = plan.name;
      json overrides;
      std::string zip;
      if (plan.route == kLambdaCreate) {
        auto parsed = create_request(body, name);
        if (!parsed) co_return invalid(parsed.error().message);
        overrides = std::move(parsed->first);
        zip = std::move(parsed->second);
        if (registry_.get(name)) {
          co_return lambda_error(http::status::conflict, "ResourceConflictException",
                                 "Function already exist: " + name);
        }
      } else {
        auto record = registry_.get(name);
        if (!record) co_return not_found(name);
        if (!body.is_object() || !body.contains("ZipFile") || !body["ZipFile"].is_string()) {
          co_return invalid(
              "ZipFile (the zip, base64) is required; S3 and image code are not "
              "supported by Ember");
        }
        auto decoded = base64_decode(body["ZipFile"].get<std::string>());
        if (!decoded) co_return invalid("ZipFile is not base64");
        zip = std::move(*decoded);
        // The code changes; the configuration stays what it is.
        overrides = record->active().config.to_json();
      }
      registry::DeployRequest deploy{name, std::move(zip), "application/zip", std::move(overrides)};
      auto work = [this, deploy = std::move(deploy)] { return registry_.deploy(deploy); };
      auto change = co_await run_blocking(blocking_, std::move(work));
      if (!change) {
        const Error& e = change.error();
        if (e.code == Errc::kTooLarge) {
          co_return lambda_error(http::status::payload_too_large, "RequestEntityTooLargeException",
                                 e.message);
        }
        if (e.code == Errc::kSystem) {
          spdlog::error("api: [fn={}] deploy failed: {}", name, e.message);
          co_return lambda_error(http::status::internal_server_error, "ServiceException",
                                 e.message);
        }
        co_return invalid(e.message);
      }
      if (change->changed) {
        spdlog::info("api: [fn={}] deployed version {} (Lambda API)", name,
                     change->record->active_version);
        deployed(change->record);
      }
      co_return json_response(
          plan.route == kLambdaCreate ? http::status::created : http::status::ok,
          configuration(*change->record));
    }
    default:
      break;
  }
  co_return lambda_error(http::status::not_found, "ResourceNotFoundException", "no such operation");
}

asio::awaitable<Response> Api::lambda_aliases(const Plan& plan, const Request& request) {
  if (auto st = check_signature(request, ""); !st) co_return signature_refusal(st.error());
  auto record = registry_.get(plan.name);
  if (!record) {
    co_return lambda_error(http::status::not_found, "ResourceNotFoundException",
                           "Function not found: " + function_arn(plan.name));
  }
  std::string name;  // the path's alias, for .../aliases/{Name}
  if (plan.route == kLambdaAlias) {
    std::string_view path = request.target();
    path = path.substr(0, path.find('?'));
    name = std::string(path.substr(path.rfind('/') + 1));
  }
  auto alias_not_found = [&](const std::string& alias) {
    return lambda_error(http::status::not_found, "ResourceNotFoundException",
                        fmt::format("Alias not found: {}:{}", function_arn(plan.name), alias));
  };
  const http::verb method = request.method();
  if (method == http::verb::get && plan.route == kLambdaAliases) {
    json aliases = json::array();
    for (const auto& [_, a] : record->aliases) aliases.push_back(alias_configuration(plan.name, a));
    co_return json_response(http::status::ok, json{{"Aliases", std::move(aliases)}});
  }
  auto existing = record->aliases.find(name);
  if (method == http::verb::get) {
    if (existing == record->aliases.end()) co_return alias_not_found(name);
    co_return json_response(http::status::ok, alias_configuration(plan.name, existing->second));
  }
  if (method == http::verb::delete_) {
    auto work = [this, function = plan.name, name] {
      return registry_.remove_alias(function, name);
    };
    auto change = co_await run_blocking(blocking_, std::move(work));
    if (!change) co_return lambda_alias_error(change.error(), plan.name, name);
    Response res{http::status::no_content, 11};
    res.set(http::field::server, "ember");
    co_return res;
  }
  // CreateAlias (POST) or UpdateAlias (PUT, of an alias that exists).
  registry::Alias alias;
  if (method == http::verb::put) {
    if (existing == record->aliases.end()) co_return alias_not_found(name);
    alias = existing->second;
  }
  auto body = parse_untrusted(request.body());
  if (auto st = apply_alias_body(body, *record, alias); !st) {
    if (st.error().code == Errc::kNotFound) {
      co_return lambda_error(http::status::not_found, "ResourceNotFoundException",
                             st.error().message);
    }
    co_return invalid(st.error().message);
  }
  auto work = [this, function = plan.name, alias, create = method == http::verb::post] {
    return registry_.put_alias(function, alias, create);
  };
  auto change = co_await run_blocking(blocking_, std::move(work));
  if (!change) co_return lambda_alias_error(change.error(), plan.name, alias.name);
  co_return json_response(method == http::verb::post ? http::status::created : http::status::ok,
                          alias_configuration(plan.name, change->record->aliases.at(alias.name)));
}

}  // namespace ember::gateway
