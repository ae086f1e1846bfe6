// The alias routes: GET and POST /v1/functions/{name}/aliases, and GET, PUT and DELETE
// .../aliases/{alias}. An alias names a version, optionally with a canary share for a second.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio/use_awaitable.hpp>
#include <boost/url/parse.hpp>

#include "ember/common/json_fields.h"
#include "ember/gateway/api.h"
#include "ember/gateway/blocking.h"
#include "routes.h"

namespace ember::gateway {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

// The alias a request body describes; `name` is the one the path gives (empty for POST).
Result<registry::Alias> alias_from_body(const std::string& body, const std::string& name) {
  auto parsed = parse_json(body, "request body");
  if (!parsed) return std::move(parsed).error();
  registry::Alias a;
  JsonFields f(*parsed, "");
  f.string("name", a.name, 128);
  f.integer("version", a.version, 1, INT32_MAX);
  f.string("description", a.description, 256);
  if (const json* canary = f.object("canary")) {
    JsonFields cf(*canary, "canary");
    cf.integer("version", a.canary_version, 1, INT32_MAX);
    cf.number("weight", a.canary_weight, 0, 1);
    if (auto st = cf.finish(); !st) return std::move(st).error();
    if (a.canary_version == 0) return Error::invalid("canary.version: missing", "canary.version");
  }
  if (auto st = f.finish(); !st) return std::move(st).error();
  if (a.version == 0) return Error::invalid("version: missing", "version");
  if (!name.empty()) {
    if (!a.name.empty() && a.name != name) {
      return Error::invalid("name: differs from the alias in the path", "name");
    }
    a.name = name;
  }
  if (a.name.empty()) return Error::invalid("name: missing", "name");
  return a;
}

}  // namespace

asio::awaitable<Response> Api::aliases(const Plan& plan, const Request& request) {
  auto record = registry_.get(plan.name);
  if (!record) {
    co_return error_response(Error::not_found("function " + plan.name + " does not exist"));
  }
  std::string alias;  // the path's, for .../aliases/{alias}
  if (plan.route == kAlias) {
    if (auto url = boost::urls::parse_origin_form(request.target())) {
      for (auto seg : url->segments()) alias = seg;  // the last segment
    }
    if (auto st = registry::validate_alias_name(alias); !st) co_return error_response(st.error());
  }
  const http::verb method = request.method();
  if (method == http::verb::get) {
    if (plan.route == kAliases) {
      json list = json::array();
      for (const auto& [_, a] : record->aliases) list.push_back(a.to_json());
      co_return json_response(http::status::ok, json{{"aliases", std::move(list)}});
    }
    auto it = record->aliases.find(alias);
    if (it == record->aliases.end()) {
      co_return error_response(
          Error::not_found(fmt::format("function {} has no alias {}", plan.name, alias)));
    }
    co_return json_response(http::status::ok, it->second.to_json());
  }
  if (method == http::verb::delete_) {
    auto work = [this, name = plan.name, alias] { return registry_.remove_alias(name, alias); };
    auto change = co_await run_blocking(blocking_, std::move(work));
    if (!change) co_return error_response(change.error());
    spdlog::info("api: [fn={}] alias {} deleted", plan.name, alias);
    Response res{http::status::no_content, 11};
    res.set(http::field::server, "ember");
    co_return res;
  }
  // POST creates (409 if it exists: PUT replaces); PUT creates or replaces.
  auto parsed = alias_from_body(request.body(), alias);
  if (!parsed) co_return error_response(parsed.error());
  auto work = [this, name = plan.name, a = *parsed, create = method == http::verb::post] {
    return registry_.put_alias(name, a, create);
  };
  auto change = co_await run_blocking(blocking_, std::move(work));
  if (!change) co_return error_response(change.error());
  const auto& saved = change->record->aliases.at(parsed->name);
  spdlog::info(
      "api: [fn={}] alias {} → version {}{}", plan.name, saved.name, saved.version,
      saved.canary_version > 0
          ? fmt::format(" ({:.0f}% to version {})", saved.canary_weight * 100, saved.canary_version)
          : std::string());
  Response res =
      json_response(change->created ? http::status::created : http::status::ok, saved.to_json());
  if (change->created) {
    res.set(http::field::location,
            fmt::format("/v1/functions/{}/aliases/{}", plan.name, saved.name));
  }
  co_return res;
}

}  // namespace ember::gateway
