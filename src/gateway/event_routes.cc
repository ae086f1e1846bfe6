// Asynchronous invocation: sending an event (POST /v1/functions/{name}/invoke?mode=async and
// Lambda's Event type), GET /v1/invocations/{id}, and a function's dead letters: GET
// /v1/functions/{name}/dead-letters and POST .../dead-letters/redrive.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio/use_awaitable.hpp>
#include <boost/url/parse.hpp>

#include "ember/common/clock.h"
#include "ember/common/json_fields.h"
#include "ember/gateway/api.h"
#include "ember/gateway/blocking.h"
#include "invocation.h"
#include "routes.h"

namespace ember::gateway {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

constexpr size_t kDefaultPage = 100, kMaxPage = 1000;

// A dead letter as listed: the event's state and the event itself.
json dead_letter(const events::Event& e) {
  json j = e.to_json();
  j["event"] = e.payload ? json_or_string(*e.payload) : json();
  return j;
}

}  // namespace

asio::awaitable<scheduler::InvokeOutcome> Api::run_event(const events::Event& event,
                                                         scheduler::InvokeRequest request) {
  const std::string function = event.function;
  const std::string request_id = request.request_id;
  if (logs_) {
    logs_->ring(function).append(
        logs::LogLine{0, system_clock().wall_ms(), "ember", request_id,
                      fmt::format("EVENT {} attempt {} of {} ({})", event.id, event.attempts,
                                  event.max_retries + 1, event.source)});
  }
  auto outcome = co_await scheduler_->invoke(function, std::move(request));
  meter(function, request_id, outcome);
  co_return outcome;
}

asio::awaitable<Response> Api::send_event(const Plan& plan, std::string payload, std::string source,
                                          bool lambda) {
  if (!events_) {
    co_return lambda ? lambda_error(http::status::service_unavailable, "ServiceException",
                                    "asynchronous invocation is not enabled")
                     : error_response(http::status::service_unavailable, "unavailable",
                                      "asynchronous invocation is not enabled");
  }
  events::SendRequest send{plan.name, plan.qualifier, std::move(payload), std::move(source)};
  auto sent = co_await events_->send(std::move(send));
  if (!sent) {
    const Error& e = sent.error();
    if (e.code == Errc::kUnavailable) {
      Response res =
          lambda
              ? lambda_error(http::status::too_many_requests, "TooManyRequestsException", e.message)
              : error_response(http::status::too_many_requests, "throttled", e.message);
      res.set(http::field::retry_after, "1");
      co_return res;
    }
    if (e.code == Errc::kNotFound) {
      co_return lambda
          ? lambda_error(http::status::not_found, "ResourceNotFoundException", e.message)
          : error_response(e);
    }
    spdlog::error("api: [fn={}] an event cannot be queued: {}", plan.name, e.message);
    co_return lambda
        ? lambda_error(http::status::internal_server_error, "ServiceException", e.message)
        : error_response(e);
  }
  Response res;
  if (lambda) {
    res = Response{http::status::accepted, 11};
    res.set(http::field::server, "ember");
    res.set("x-amzn-RequestId", *sent);
  } else {
    res = json_response(http::status::accepted, json{{"id", *sent}, {"status", "queued"}});
    res.set(http::field::location, "/v1/invocations/" + *sent);
  }
  res.set("X-Ember-Event-Id", *sent);
  co_return res;
}

asio::awaitable<Response> Api::event_routes(const Plan& plan, const Request& request) {
  if (!events_ || !event_store_) {
    co_return error_response(http::status::service_unavailable, "unavailable",
                             "asynchronous invocation is not enabled");
  }
  std::string last;  // the path's last segment
  if (auto url = boost::urls::parse_origin_form(request.target())) {
    for (auto seg : url->segments()) last = seg;
  }
  if (plan.route == kInvocation) {
    if (auto held = events_->find(last)) co_return json_response(http::status::ok, held->to_json());
    auto work = [store = event_store_, id = last] { return store->get(id); };
    auto found = co_await run_blocking(blocking_, std::move(work));
    if (!found) co_return error_response(found.error());
    if (!*found) {
      co_return error_response(Error::not_found(
          "no invocation " + json(last).dump(-1, ' ', false, json::error_handler_t::replace)));
    }
    co_return json_response(http::status::ok, (*found)->to_json());
  }
  if (!registry_.get(plan.name)) {
    co_return error_response(Error::not_found("function " + plan.name + " does not exist"));
  }
  if (plan.route == kDeadLetters) {
    auto page_asked = page_query(request.target(), kDefaultPage, kMaxPage);
    if (!page_asked) co_return error_response(page_asked.error());
    const size_t limit = page_asked->limit;
    const std::string cursor = page_asked->cursor;
    auto work = [store = event_store_, name = plan.name, limit, cursor] {
      return store->list(name, events::State::kDead, limit + 1, cursor);
    };
    auto listed = co_await run_blocking(blocking_, std::move(work));
    if (!listed) co_return error_response(listed.error());
    json page{{"dead_letters", json::array()}};
    for (size_t i = 0; i < listed->size() && i < limit; ++i) {
      page["dead_letters"].push_back(dead_letter((*listed)[i]));
    }
    if (listed->size() > limit) page["next_cursor"] = (*listed)[limit - 1].id;
    co_return json_response(http::status::ok, page);
  }
  // Redrive: {"ids": [...]} or, without ids, every dead letter of the function (a page of at
  // most kMaxPage per request; `remaining` says whether to ask again).
  std::vector<std::string> ids;
  if (!request.body().empty()) {
    auto body = parse_json(request.body(), "request body");
    if (!body) co_return error_response(body.error());
    JsonFields f(*body, "");
    const json* listed = f.array("ids");
    if (auto st = f.finish(); !st) co_return error_response(st.error());
    for (size_t i = 0; listed && i < listed->size(); ++i) {
      if (!(*listed)[i].is_string()) {
        co_return error_response(Error::invalid("ids: a list of event ids", "ids"));
      }
      ids.push_back((*listed)[i].get<std::string>());
    }
  }
  auto work = [store = event_store_, name = plan.name,
               ids]() -> Result<std::vector<events::Event>> {
    if (ids.empty()) return store->list(name, events::State::kDead, kMaxPage + 1, "");
    std::vector<events::Event> out;
    for (const auto& id : ids) {
      auto found = store->get(id);
      if (!found) return found.error();
      if (!*found || (*found)->function != name || (*found)->state != events::State::kDead) {
        return Error::not_found(
            fmt::format("function {} has no dead letter {}", name,
                        json(id).dump(-1, ' ', false, json::error_handler_t::replace)));
      }
      out.push_back(std::move(**found));
    }
    return out;
  };
  auto dead = co_await run_blocking(blocking_, std::move(work));
  if (!dead) co_return error_response(dead.error());
  const bool remaining = ids.empty() && dead->size() > kMaxPage;
  if (remaining) dead->resize(kMaxPage);
  auto redriven = co_await events_->redrive(std::move(*dead));
  if (!redriven) co_return error_response(redriven.error());
  spdlog::info("api: [fn={}] {} dead letters sent again", plan.name, *redriven);
  co_return json_response(http::status::ok,
                          json{{"redriven", *redriven}, {"remaining", remaining}});
}

}  // namespace ember::gateway
