// Routes that manage functions: deploy, patch, rollback, delete, and the function record.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <charconv>

#include "ember/common/clock.h"
#include "ember/common/json_fields.h"
#include "ember/gateway/api.h"
#include "ember/gateway/blocking.h"
#include "routes.h"

namespace ember::gateway {

namespace asio = boost::asio;
using nlohmann::json;

json function_view(const registry::FunctionRecord& record) {
  json view = record.to_json();
  const auto& active = record.active();
  view["config"] = active.config.to_json();
  view["bundle_sha256"] = active.bundle_sha256;
  return view;
}

Api::Api(ApiOptions options, registry::Registry& registry, asio::thread_pool& blocking,
         scheduler::Scheduler* scheduler, logs::LogStore* logs)
    : options_(std::move(options)),
      registry_(registry),
      blocking_(blocking),
      scheduler_(scheduler),
      logs_(logs) {}

json Api::view(const registry::FunctionRecord& record) const {
  json v = function_view(record);
  if (scheduler_) {
    v["instances"] = scheduler_->instance_counts(record.name);
    v["sandbox"] = scheduler_->sandbox_counts(record.name);
  }
  if (timetable_ && !record.active().config.schedule.empty()) {
    json fires = json::array();
    for (const auto& [expression, at_ms] : timetable_->next_fires(record.name)) {
      fires.push_back({{"schedule", expression},
                       {"at_ms", at_ms},
                       {"at", format_utc(at_ms / 1000, "%Y-%m-%dT%H:%M:%SZ")}});
    }
    v["next_fires"] = std::move(fires);
  }
  return v;
}

Response Api::list_functions(const Request& request) const {
  auto page_asked = page_query(request.target(), 100, 1000);
  if (!page_asked) return error_response(page_asked.error());
  const size_t limit = page_asked->limit;
  const std::string& cursor = page_asked->cursor;
  // By name; the cursor is the last name of the page before, so deploys and deletes between
  // pages neither repeat nor skip the functions that stay.
  json list = json::array();
  std::string last;
  bool more = false;
  for (const auto& record : registry_.list()) {
    if (!cursor.empty() && record->name <= cursor) continue;
    if (list.size() == limit) {
      more = true;
      break;
    }
    // A summary: the active version in full, the others by number.
    json v = view(*record);
    json numbers = json::array();
    for (const auto& version : record->versions) numbers.push_back(version.number);
    v["versions"] = std::move(numbers);
    list.push_back(std::move(v));
    last = record->name;
  }
  json page{{"functions", std::move(list)}};
  if (more) page["next_cursor"] = last;
  return json_response(http::status::ok, page);
}

void Api::deployed(const registry::RecordPtr& record) {
  if (scheduler_) scheduler_->on_deployed(record);
  // Its schedules, as the new version has them, from now on.
  if (timetable_) timetable_->poke();
}

void Api::changed_elsewhere(const std::string& name, registry::RecordPtr now) {
  if (now) {
    deployed(now);
    return;
  }
  // As a delete here: calls in flight finish, queued events go, its series go.
  auto forget = [this, name] {
    if (events_) events_->forget(name);
    if (timetable_) timetable_->poke();
    if (metrics_) metrics_->forget(name);
  };
  if (!scheduler_) {
    forget();
    return;
  }
  asio::co_spawn(
      scheduler_->executor(),
      [this, name, forget]() -> asio::awaitable<void> {
        co_await scheduler_->remove(name, options_.delete_drain);
        forget();
      },
      asio::detached);
}

asio::awaitable<Response> Api::deploy(const Plan& plan, Request request) {
  auto overrides = registry::overrides_from_query(query_params(request.target()));
  if (!overrides) co_return error_response(overrides.error());
  registry::DeployRequest deploy{plan.name, std::move(request.body()),
                                 std::string(request[http::field::content_type]),
                                 std::move(*overrides)};
  auto work = [this, deploy = std::move(deploy)] { return registry_.deploy(deploy); };
  auto change = co_await run_blocking(blocking_, std::move(work));
  if (!change) {
    if (change.error().code == Errc::kSystem) {
      spdlog::error("api: [fn={}] deploy failed: {}", plan.name, change.error().message);
    }
    co_return error_response(change.error());
  }
  const auto& record = *change->record;
  if (change->changed) {
    spdlog::info("api: [fn={}] deployed version {} (bundle {})", plan.name, record.active_version,
                 record.active().bundle_sha256.substr(0, 12));
  }
  if (change->changed) deployed(change->record);
  Response res =
      json_response(change->created ? http::status::created : http::status::ok, view(record));
  if (change->created) res.set(http::field::location, "/v1/functions/" + plan.name);
  co_return res;
}

asio::awaitable<Response> Api::patch(const Plan& plan, Request request) {
  auto body = parse_json(request.body(), "request body");
  if (!body) co_return error_response(body.error());
  if (!body->is_object()) {
    co_return error_response(Error::invalid("request body must be a JSON object of fields"));
  }
  auto work = [this, name = plan.name, patch = std::move(*body)] {
    return registry_.patch(name, patch);
  };
  auto change = co_await run_blocking(blocking_, std::move(work));
  if (!change) co_return error_response(change.error());
  if (change->changed) {
    spdlog::info("api: [fn={}] configuration changed, version {}", plan.name,
                 change->record->active_version);
    deployed(change->record);
  }
  co_return json_response(http::status::ok, view(*change->record));
}

asio::awaitable<Response> Api::rollback(const Plan& plan, Request request) {
  std::optional<int> to;
  for (const auto& [key, value] : query_params(request.target())) {
    if (key != "to") {
      co_return error_response(Error::invalid("unknown query parameter \"" + key + "\"", key));
    }
    int v = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    if (ec != std::errc() || end != value.data() + value.size() || v < 1) {
      co_return error_response(Error::invalid("to: must be a version number", "to"));
    }
    to = v;
  }
  if (!to) co_return error_response(Error::invalid("to: missing, as in ?to=2", "to"));
  auto work = [this, name = plan.name, v = *to] { return registry_.rollback(name, v); };
  auto change = co_await run_blocking(blocking_, std::move(work));
  if (!change) co_return error_response(change.error());
  spdlog::info("api: [fn={}] version {} is active", plan.name, change->record->active_version);
  if (change->changed) deployed(change->record);
  co_return json_response(http::status::ok, view(*change->record));
}

asio::awaitable<Response> Api::remove(const Plan& plan) {
  if (!registry_.get(plan.name)) {
    co_return error_response(Error::not_found("function " + plan.name + " does not exist"));
  }
  // Calls in flight finish first; new ones are refused while the function drains.
  if (scheduler_) co_await scheduler_->remove(plan.name, options_.delete_drain);
  // Its queued events go too: nothing is left to run them.
  if (events_) events_->forget(plan.name);
  auto work = [this, name = plan.name] {
    Status removed = registry_.remove(name);
    // Its keys go with it: a function deployed again under the name starts without keys, or
    // the events and dead letters of the one before.
    if (removed && keys_) removed = keys_->forget(name);
    if (removed && event_store_) removed = event_store_->forget(name);
    return removed;
  };
  auto status = co_await run_blocking(blocking_, std::move(work));
  if (!status) co_return error_response(status.error());
  spdlog::info("api: [fn={}] deleted", plan.name);
  if (timetable_) timetable_->poke();
  // Its series go; its usage records stay, for billing.
  if (metrics_) metrics_->forget(plan.name);
  Response res{http::status::no_content, 11};
  res.set(http::field::server, "ember");
  co_return res;
}

}  // namespace ember::gateway
