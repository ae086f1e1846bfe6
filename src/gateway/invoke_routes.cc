// The invoke routes: POST /v1/functions/{name}/invoke and the HTTP trigger /fn/{name}/...
#include <spdlog/spdlog.h>

#include <boost/asio/use_awaitable.hpp>

#include "ember/common/clock.h"
#include "ember/gateway/api.h"
#include "invocation.h"
#include "routes.h"

namespace ember::gateway {

namespace asio = boost::asio;

asio::awaitable<Response> Api::invoke(const Plan& plan, Request request) {
  const std::string request_id = new_request_id();
  if (!scheduler_) {
    co_return error_response(http::status::service_unavailable, "unavailable",
                             "invocation is not enabled");
  }
  const bool trigger = plan.route == kHttpTrigger;
  // The credential that opened a token-protected function (a key, or the admin token) is
  // Ember's, not the function's: it never reaches the function's code.
  if (trigger) {
    if (auto record = registry_.get(plan.name); record && needs_token(*record, plan.qualifier)) {
      request.erase(http::field::authorization);
    }
  }
  std::string event;
  if (trigger) {
    event = http_event(request, TriggerContext{request_id, plan.peer, system_clock().wall_ms()});
  } else {
    auto body = invoke_event(request.body());
    if (!body) co_return error_response(body.error());
    event = std::move(*body);
  }
  scheduler::InvokeRequest call{request_id, std::move(event), trigger ? "http" : "invoke",
                                plan.version, plan.qualifier};
  auto outcome = co_await scheduler_->invoke(plan.name, std::move(call));
  meter(plan.name, request_id, outcome);
  std::string problem;
  Response res = invoke_response(std::move(outcome), request_id, trigger, &problem);
  if (trigger) {
    // A service worker a function's page registers covers that function's pages at most: not
    // /fn/ (other functions) nor /console/, whose origin it shares.
    res.set("Service-Worker-Allowed", trigger_root(request.target()));
  }
  if (!problem.empty()) {
    spdlog::debug("api: [fn={}] request {}: the function's response cannot be sent: {}", plan.name,
                  request_id, problem);
    if (logs_) {
      logs_->ring(plan.name).append(logs::LogLine{0, system_clock().wall_ms(), "ember", request_id,
                                                  "the response cannot be sent: " + problem});
    }
  }
  co_return res;
}

}  // namespace ember::gateway
