// The function log route: a page of captured lines, or a stream that follows new ones.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <charconv>

#include "ember/common/json_fields.h"
#include "ember/gateway/api.h"
#include "ember/gateway/blocking.h"
#include "routes.h"

namespace ember::gateway {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

constexpr auto kFollowHeartbeat = std::chrono::seconds(15);

// Follows a function's log: new lines as NDJSON as soon as they are captured, an empty line after
// 15 s of silence (so a client that went away is noticed), and the end when the daemon drains.
class LogFollower final : public BodyStream {
 public:
  LogFollower(asio::any_io_executor ex, logs::LogStore& logs, std::string name, uint64_t since,
              const HttpServer* server)
      : logs_(logs), name_(std::move(name)), next_(since), server_(server), wake_(ex) {
    subscription_ = logs_.ring(name_).subscribe([this] { wake_.cancel(); });
  }
  ~LogFollower() override { logs_.unsubscribe(name_, subscription_); }

  asio::awaitable<std::optional<std::string>> next() override {
    const auto quiet_since = std::chrono::steady_clock::now();
    while (!(server_ && server_->draining())) {
      bool truncated = false;
      auto lines = logs_.ring(name_).read(next_, 1000, truncated);
      if (!lines.empty()) {
        std::string out;
        if (truncated) out += json{{"truncated", true}}.dump() + "\n";
        // A line is what a function wrote: not always UTF-8 (a character cut at the line limit).
        for (const auto& line : lines) {
          out += line.to_json().dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
        }
        next_ = lines.back().seq + 1;
        co_return out;
      }
      if (std::chrono::steady_clock::now() - quiet_since >= kFollowHeartbeat) co_return "\n";
      wake_.expires_after(std::chrono::seconds(1));
      co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    co_return std::nullopt;
  }

 private:
  logs::LogStore& logs_;
  std::string name_;
  uint64_t next_;
  const HttpServer* server_;
  asio::steady_timer wake_;
  uint64_t subscription_ = 0;
};

}  // namespace

asio::awaitable<Reply> Api::logs(const Plan& plan, const Request& request) {
  if (!registry_.get(plan.name)) {
    co_return error_response(Error::not_found("function " + plan.name + " does not exist"));
  }
  uint64_t since = 0;
  size_t limit = 1000;
  bool follow = false;
  for (const auto& [key, value] : query_params(request.target())) {
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    const bool number = ec == std::errc() && end == value.data() + value.size();
    if (key == "since" && number) {
      since = v;
    } else if (key == "limit" && number && v >= 1 && v <= 10000) {
      limit = static_cast<size_t>(v);
    } else if (key == "follow" && (value == "1" || value == "true" || value == "0")) {
      follow = value != "0";
    } else {
      co_return error_response(Error::invalid(
          "query parameter \"" + key + "\" must be since=SEQ, limit=1..10000 or follow=1", key));
    }
  }
  if (!logs_) co_return error_response(http::status::service_unavailable, "unavailable", "no logs");
  if (follow) {
    Response head{http::status::ok, 11};
    head.set(http::field::server, "ember");
    head.set(http::field::content_type, "application/x-ndjson");
    auto ex = co_await asio::this_coro::executor;
    co_return Reply(std::move(head),
                    std::make_unique<LogFollower>(ex, *logs_, plan.name, since, server_));
  }
  json lines = json::array();
  bool truncated = false;
  auto& ring = logs_->ring(plan.name);
  for (const auto& line : ring.read(since, limit, truncated)) lines.push_back(line.to_json());
  uint64_t next =
      lines.empty() ? std::max(since, ring.next_seq()) : lines.back()["seq"].get<uint64_t>() + 1;
  co_return json_response(
      http::status::ok,
      json{{"lines", std::move(lines)}, {"next", next}, {"truncated", truncated}});
}

}  // namespace ember::gateway
