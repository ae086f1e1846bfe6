// The key-value admin routes: an operator's view of every namespace (docs/kv.md).
#include <fmt/format.h>

#include <boost/url/parse.hpp>
#include <charconv>

#include "ember/common/json_fields.h"
#include "ember/gateway/api.h"
#include "ember/gateway/blocking.h"
#include "routes.h"

namespace ember::gateway {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

// The error as the admin API shows it: the status of its kind, the key-value error type as
// its code.
Response kv_error(const Error& error) {
  const Response mapped = error_response(error);
  return error_response(mapped.result(), kv::error_type(error), error.message, error.field);
}

std::optional<int64_t> parse_int(std::string_view text) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

// The key of /v1/kv/{ns}/{key...}: every segment after the namespace, decoded, joined by "/".
std::string key_of(std::string_view target) {
  auto url = boost::urls::parse_origin_form(target);
  std::string key;
  if (!url) return key;
  size_t i = 0;
  for (auto seg : url->segments()) {
    if (i++ < 3) continue;
    if (i > 4) key += '/';
    key += seg;
  }
  return key;
}

json item_json(const kv::Item& item) {
  json j{{"key", item.key}, {"value", json_or_string(item.value)}, {"version", item.version}};
  if (item.expires_ms) j["expiresMs"] = *item.expires_ms;
  return j;
}

}  // namespace

asio::awaitable<Response> Api::kv(const Plan& plan, Request request) {
  if (!kv_) {
    co_return error_response(http::status::service_unavailable, "unavailable",
                             "the key-value store is not enabled");
  }
  kv::Request req;
  req.ns = plan.name;
  for (const auto& param : query_params(request.target())) {
    // Not a structured binding: a lambda may not capture one before Clang 16.
    const std::string& key = param.first;
    const std::string& value = param.second;
    auto number = parse_int(value);
    auto bad = [&key](std::string_view what) {
      return error_response(Error::invalid(fmt::format("{}: {}", key, what), key));
    };
    if (plan.route == kKvList && key == "prefix") {
      req.prefix = value;
    } else if (plan.route == kKvList && key == "cursor") {
      req.cursor = value;
    } else if (plan.route == kKvList && key == "limit") {
      if (!number || *number < 1) co_return bad("expected a whole number from 1");
      req.limit = static_cast<size_t>(*number);
    } else if (request.method() == http::verb::put && key == "ttl_s") {
      if (!number) co_return bad("expected a whole number of seconds");
      req.options.ttl_s = *number;
    } else if (request.method() == http::verb::put && key == "if_version") {
      if (!number || *number < 0) co_return bad("expected a version, 0 for \"only if absent\"");
      req.options.if_version = static_cast<uint64_t>(*number);
    } else {
      co_return bad("unknown query parameter");
    }
  }
  if (plan.route == kKvList) {
    req.op = kv::Op::kList;
  } else {
    req.key = key_of(request.target());
    switch (request.method()) {
      case http::verb::get:
        req.op = kv::Op::kGet;
        break;
      case http::verb::put:
        req.op = kv::Op::kPut;
        req.value = std::move(request.body());
        break;
      default:
        req.op = kv::Op::kRemove;
        break;
    }
  }
  const kv::Op op = req.op;
  const auto started = std::chrono::steady_clock::now();
  // Named, not a temporary in the co_await expression (see run_blocking).
  auto work = [store = &kv_->store(), req = std::move(req)]() mutable {
    return store->run(std::move(req));
  };
  kv::Reply reply = co_await run_blocking(blocking_, std::move(work));
  if (metrics_) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    metrics_->kv_operation("", kv::op_name(op),
                           reply.status ? "ok" : kv::error_type(reply.status.error()), seconds);
  }
  if (!reply.status) co_return kv_error(reply.status.error());
  switch (op) {
    case kv::Op::kList: {
      json items = json::array();
      for (const auto& item : reply.page.items) items.push_back(item_json(item));
      json body{{"items", std::move(items)}};
      body["cursor"] = reply.page.cursor.empty() ? json(nullptr) : json(reply.page.cursor);
      co_return json_response(http::status::ok, body);
    }
    case kv::Op::kGet:
      if (!reply.item) {
        Error missing = Error::not_found(fmt::format(
            "namespace {} has no key {}", plan.name,
            json(key_of(request.target())).dump(-1, ' ', false, json::error_handler_t::replace)));
        missing.field = "key";
        co_return kv_error(missing);
      }
      co_return json_response(http::status::ok, item_json(*reply.item));
    case kv::Op::kPut:
      co_return json_response(http::status::ok, json{{"version", reply.version}});
    case kv::Op::kRemove:
      co_return json_response(http::status::ok, json{{"deleted", reply.removed}});
    case kv::Op::kIncr:
      break;
  }
  co_return json_response(http::status::ok, json::object());
}

}  // namespace ember::gateway
