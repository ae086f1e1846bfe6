// The metering routes: usage totals and records, per function or for all.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio/use_awaitable.hpp>
#include <charconv>
#include <cstdio>
#include <ctime>

#include "ember/common/clock.h"
#include "ember/common/json_fields.h"
#include "ember/gateway/api.h"
#include "ember/gateway/blocking.h"
#include "routes.h"

namespace ember::gateway {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

// Seconds since the epoch, "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SSZ" (UTC), as milliseconds.
std::optional<int64_t> parse_time(const std::string& text) {
  if (!text.empty() &&
      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    int64_t seconds = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
    if (ec != std::errc() || seconds > 100'000'000'000) return std::nullopt;
    return seconds * 1000;
  }
  std::tm tm{};
  int consumed = 0;
  if (text.size() == 10 &&
      std::sscanf(text.c_str(), "%4d-%2d-%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &consumed) ==
          3 &&
      consumed == 10) {
  } else if (text.size() == 20 &&
             std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &tm.tm_year, &tm.tm_mon,
                         &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) == 6 &&
             consumed == 20) {
  } else {
    return std::nullopt;
  }
  if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
      tm.tm_min > 59 || tm.tm_sec > 60) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<int64_t>(::timegm(&tm)) * 1000;
}

std::string format_time(int64_t ms) { return format_utc(ms / 1000, "%Y-%m-%dT%H:%M:%SZ"); }

}  // namespace

asio::awaitable<Response> Api::usage(const Plan& plan, const Request& request) {
  if (!usage_) {
    co_return error_response(http::status::service_unavailable, "unavailable",
                             "metering is not enabled");
  }
  const bool one = plan.route == kFunctionUsage;
  int64_t from = 0;
  int64_t to = system_clock().wall_ms() + 1;
  std::string function = one ? plan.name : "";
  int limit = 100;
  for (const auto& [key, value] : query_params(request.target())) {
    if (key == "from" || key == "to") {
      auto t = parse_time(value);
      if (!t) {
        co_return error_response(Error::invalid(
            key + ": expected seconds since the epoch, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ", key));
      }
      (key == "from" ? from : to) = *t;
    } else if (key == "function" && !one) {
      if (auto st = registry::validate_name(value); !st) co_return error_response(st.error());
      function = value;
    } else if (key == "limit" && one) {
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), limit);
      if (ec != std::errc() || end != value.data() + value.size() || limit < 1 || limit > 10000) {
        co_return error_response(Error::invalid("limit: must be 1..10000", "limit"));
      }
    } else {
      co_return error_response(Error::invalid("unknown query parameter \"" + key +
                                                  "\"; allowed: from, to, " +
                                                  (one ? "limit" : "function"),
                                              key));
    }
  }
  if (to <= from) co_return error_response(Error::invalid("to must be after from", "to"));
  json body{{"from", format_time(from)}, {"to", format_time(to)}};
  if (one) {
    if (!registry_.get(plan.name)) {
      co_return error_response(Error::not_found("function " + plan.name + " does not exist"));
    }
    auto work = [this, function, from, to, limit] {
      return usage_->records(function, from, to, limit);
    };
    auto records = co_await run_blocking(blocking_, std::move(work));
    if (!records) co_return error_response(records.error());
    json list = json::array();
    for (const auto& r : *records) list.push_back(r.to_json());
    body["records"] = std::move(list);
  }
  auto work = [this, function, from, to] { return usage_->totals(from, to, function); };
  auto totals = co_await run_blocking(blocking_, std::move(work));
  if (!totals) co_return error_response(totals.error());
  metering::FunctionUsage sum;
  sum.function = "*";
  json list = json::array();
  for (const auto& u : *totals) {
    list.push_back(u.to_json(prices_));
    sum.add(u);
  }
  if (one) {
    body["usage"] = list.empty() ? [&] {
      metering::FunctionUsage none;
      none.function = plan.name;
      return none.to_json(prices_);
    }()
                                 : list.front();
  } else {
    body["functions"] = std::move(list);
    json total = sum.to_json(prices_);
    total.erase("function");
    body["total"] = std::move(total);
  }
  if (prices_.per_gb_second > 0 || prices_.per_million_requests > 0 ||
      prices_.per_million_kv_reads > 0 || prices_.per_million_kv_writes > 0) {
    body["prices"] = json{{"per_gb_second", prices_.per_gb_second},
                          {"per_million_requests", prices_.per_million_requests},
                          {"per_million_kv_reads", prices_.per_million_kv_reads},
                          {"per_million_kv_writes", prices_.per_million_kv_writes}};
  }
  co_return json_response(http::status::ok, body);
}

}  // namespace ember::gateway
