// The invoke-key routes: POST and GET /v1/functions/{name}/keys, DELETE .../keys/{id}.
#include <fmt/format.h>

#include <boost/url/parse.hpp>

#include "ember/common/clock.h"
#include "ember/gateway/api.h"
#include "ember/gateway/blocking.h"
#include "routes.h"

namespace ember::gateway {

namespace asio = boost::asio;
using nlohmann::json;

asio::awaitable<Response> Api::keys(const Plan& plan, const Request& request) {
  if (!keys_) {
    co_return error_response(http::status::service_unavailable, "unavailable",
                             "invoke keys are not enabled");
  }
  if (!registry_.get(plan.name)) {
    co_return error_response(Error::not_found("function " + plan.name + " does not exist"));
  }
  if (plan.route == kKey) {
    auto url = boost::urls::parse_origin_form(request.target());
    std::string id;
    if (url) {
      for (auto seg : url->segments()) id = seg;  // the last segment
    }
    auto work = [this, name = plan.name, id] { return keys_->revoke(name, id); };
    auto revoked = co_await run_blocking(blocking_, std::move(work));
    if (!revoked) co_return error_response(revoked.error());
    if (!*revoked) {
      co_return error_response(Error::not_found(
          fmt::format("function {} has no key {}", plan.name,
                      json(id).dump(-1, ' ', false, json::error_handler_t::replace))));
    }
    co_return json_response(http::status::ok, json{{"id", id}, {"revoked", true}});
  }
  if (request.method() == http::verb::get) {
    json list = json::array();
    for (const auto& k : keys_->list(plan.name)) {
      list.push_back({{"id", k.id}, {"created_ms", k.created_ms}});
    }
    co_return json_response(http::status::ok, json{{"keys", std::move(list)}});
  }
  // Checked again on the blocking pool, where deletes run too: a key made while its function
  // was being deleted would otherwise outlive it and open a later function of the same name.
  auto work = [this, name = plan.name]() -> Result<InvokeKeys::Created> {
    if (!registry_.get(name)) return Error::not_found("function " + name + " does not exist");
    return keys_->create(name, system_clock().wall_ms());
  };
  auto created = co_await run_blocking(blocking_, std::move(work));
  if (!created) co_return error_response(created.error());
  co_return json_response(http::status::created,
                          json{{"id", created->key.id},
                               {"secret", created->secret},
                               {"token", created->token},
                               {"created_ms", created->key.created_ms},
                               {"note", "the secret is shown once; store it now"}});
}

}  // namespace ember::gateway
