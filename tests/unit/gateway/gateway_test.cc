#include <gtest/gtest.h>
#include <sys/stat.h>

#include <boost/asio/thread_pool.hpp>
#include <sstream>

#include "ember/gateway/api.h"
#include "ember/gateway/auth.h"
#include "ember/gateway/framing.h"
#include "ember/gateway/http.h"
#include "temp_dir.h"

namespace ember::gateway {
namespace {

TEST(Bearer, MatchesOnlyTheExactToken) {
  const std::string token = "0123456789abcdef0123";
  EXPECT_TRUE(bearer_matches("Bearer 0123456789abcdef0123", token));
  EXPECT_TRUE(bearer_matches("bearer 0123456789abcdef0123", token));
  EXPECT_FALSE(bearer_matches("Bearer 0123456789abcdef012", token));
  EXPECT_FALSE(bearer_matches("Bearer 0123456789abcdef01234", token));
  EXPECT_FALSE(bearer_matches("Basic 0123456789abcdef0123", token));
  EXPECT_FALSE(bearer_matches("0123456789abcdef0123", token));
  EXPECT_FALSE(bearer_matches("Bearer ", token));
  EXPECT_FALSE(bearer_matches("Bearer x", ""));
}

TEST(AdminToken, GeneratedOnceWithMode0600) {
  testing::TempDir t;
  auto first = load_or_create_admin_token(t.path());
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->size(), 64u);
  struct stat st {};
  ASSERT_EQ(::stat((t / "admin.token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto second = load_or_create_admin_token(t.path());
  EXPECT_EQ(*first, *second);
}

class PlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry::RegistryOptions o;
    o.state_dir = tmp_ / "state";
    auto opened = registry::Registry::open(o);
    ASSERT_TRUE(opened.ok());
    registry_ = std::move(opened).value();
    api_ = std::make_unique<Api>(ApiOptions{kToken, 1000, 100}, *registry_, pool_);
  }
  Plan plan(http::verb method, const std::string& target, Transport transport,
            bool with_token = true) {
    RequestHeader h;
    h.method(method);
    h.target(target);
    if (with_token) h.set(http::field::authorization, std::string("Bearer ") + kToken);
    return api_->plan(h, transport);
  }
  int status(const Plan& p) { return p.reject ? static_cast<int>(p.reject->result_int()) : 0; }

  static constexpr const char* kToken = "plan-test-token-0123456789";
  testing::TempDir tmp_;
  boost::asio::thread_pool pool_{1};
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<Api> api_;
};

TEST_F(PlanTest, AdminRoutesNeedTheTokenOnTcpOnly) {
  EXPECT_EQ(status(plan(http::verb::get, "/v1/functions", Transport::kTcp, false)), 401);
  EXPECT_EQ(status(plan(http::verb::get, "/v1/functions", Transport::kTcp, true)), 0);
  EXPECT_EQ(status(plan(http::verb::get, "/v1/functions", Transport::kUnix, false)), 0);
  EXPECT_EQ(status(plan(http::verb::get, "/healthz", Transport::kTcp, false)), 0);
  RequestHeader h;
  h.method(http::verb::get);
  h.target("/v1/functions");
  h.set(http::field::authorization, "Bearer wrong-token-0123456789");
  auto p = api_->plan(h, Transport::kTcp);
  EXPECT_EQ(status(p), 401);
  EXPECT_EQ(p.reject->at(http::field::www_authenticate), "Bearer realm=\"ember\"");
}

TEST_F(PlanTest, NameRulesApplyOnEveryFunctionRoute) {
  const char* bad_names[] = {
      "..",     "%2e%2e",
      "%2E%2E", "a%2fb",
      "%00",    "a%00b",
      "UP",     "x_y",
      "-x",     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
  for (const char* name : bad_names) {
    for (auto [method, suffix] : {std::pair{http::verb::get, ""},
                                  {http::verb::put, ""},
                                  {http::verb::patch, ""},
                                  {http::verb::delete_, ""},
                                  {http::verb::post, "/rollback"}}) {
      std::string target = std::string("/v1/functions/") + name + suffix;
      EXPECT_EQ(status(plan(method, target, Transport::kUnix)), 400) << target;
    }
  }
  EXPECT_EQ(status(plan(http::verb::get, "/v1/functions/a/../b", Transport::kUnix)), 404);
}

TEST_F(PlanTest, BodyLimitsArePerRoute) {
  auto deploy = plan(http::verb::put, "/v1/functions/hello", Transport::kTcp);
  ASSERT_FALSE(deploy.reject);
  EXPECT_EQ(deploy.body_limit, 1000u);
  auto get = plan(http::verb::get, "/v1/functions/hello", Transport::kTcp);
  EXPECT_EQ(get.body_limit, 64u * 1024);
}

TEST_F(PlanTest, UnknownRoutesAndMethods) {
  EXPECT_EQ(status(plan(http::verb::get, "/nope", Transport::kTcp)), 404);
  EXPECT_EQ(status(plan(http::verb::get, "/v1/nope", Transport::kTcp)), 404);
  auto p = plan(http::verb::post, "/v1/functions/hello", Transport::kTcp);
  EXPECT_EQ(status(p), 405);
  EXPECT_EQ(p.reject->at(http::field::allow), "GET, PUT, PATCH, DELETE");
  EXPECT_EQ(status(plan(http::verb::delete_, "/v1/functions", Transport::kTcp)), 405);
  EXPECT_EQ(status(plan(http::verb::post, "/healthz", Transport::kTcp)), 405);
}

TEST(ErrorResponse, OneFormatForEveryError) {
  auto res = error_response(Error::invalid("memory_mb: too big", "memory_mb"));
  EXPECT_EQ(res.result_int(), 400u);
  auto body = nlohmann::json::parse(res.body());
  EXPECT_EQ(body["error"]["code"], "bad_request");
  EXPECT_EQ(body["error"]["message"], "memory_mb: too big");
  EXPECT_EQ(body["error"]["field"], "memory_mb");
  EXPECT_EQ(error_response(Error::not_found("x")).result_int(), 404u);
  EXPECT_EQ(error_response(Error::too_large("x")).result_int(), 413u);
  EXPECT_EQ(error_response(Error::unsupported("x")).result_int(), 415u);
  EXPECT_EQ(error_response(Error::system("open", "f", EIO)).result_int(), 500u);
}

HeaderScanner::Result scan_whole(std::string_view bytes) { return HeaderScanner().scan(bytes); }

TEST(HeaderScanner, FindsTheEndAcrossPiecesAndResumes) {
  const std::string header = "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next";
  HeaderScanner scanner;
  std::optional<size_t> end;
  // A byte at a time, as a slow client sends it: no answer until the empty line is complete.
  for (size_t n = 1; n <= header.size() && !end; ++n) {
    auto r = scanner.scan(std::string_view(header).substr(0, n));
    ASSERT_FALSE(r.error) << n;
    end = r.end;
    if (n < 27) {
      EXPECT_FALSE(end) << n;
    }
  }
  ASSERT_TRUE(end);
  EXPECT_EQ(*end, 27u);
  EXPECT_EQ(*scan_whole(header).end, 27u);
}

TEST(HeaderScanner, RefusesBareCrBareLfAndFolding) {
  EXPECT_TRUE(scan_whole("GET / HTTP/1.1\nHost: x\r\n\r\n").error);
  EXPECT_TRUE(scan_whole("GET / HTTP/1.1\r\nHost: x\n\n").error);
  EXPECT_TRUE(scan_whole("GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n").error);
  EXPECT_TRUE(scan_whole("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n").error);
  EXPECT_TRUE(scan_whole("GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n").error);
  EXPECT_TRUE(scan_whole("GET / HTTP/1.1\r\n Host: x\r\n\r\n").error);
  // A CR at the very end may still be followed by its LF.
  auto pending = scan_whole("GET / HTTP/1.1\r\nHost: x\r");
  EXPECT_FALSE(pending.error);
  EXPECT_FALSE(pending.end);
  // Whitespace inside a value is fine.
  EXPECT_FALSE(scan_whole("GET / HTTP/1.1\r\nA: b  c\t d\r\n\r\n").error);
}

RequestHeader header_with(std::vector<std::pair<http::field, std::string>> fields,
                          unsigned version = 11) {
  RequestHeader h;
  h.version(version);
  for (auto& [f, v] : fields) h.insert(f, v);
  return h;
}

TEST(CheckFraming, HostRules) {
  EXPECT_FALSE(check_framing(header_with({{http::field::host, "x"}})));
  EXPECT_TRUE(check_framing(header_with({})));
  EXPECT_FALSE(check_framing(header_with({}, 10)));
  EXPECT_TRUE(check_framing(header_with({{http::field::host, "x"}, {http::field::host, "x"}})));
}

TEST(CheckFraming, TransferEncodingMustEndInOneChunked) {
  using F = http::field;
  auto te = [](std::vector<std::string> values, unsigned version = 11) {
    std::vector<std::pair<http::field, std::string>> f{{F::host, "x"}};
    for (auto& v : values) f.emplace_back(F::transfer_encoding, v);
    return check_framing(header_with(f, version));
  };
  EXPECT_FALSE(te({"chunked"}));
  EXPECT_FALSE(te({"Chunked"}));
  EXPECT_FALSE(te({" chunked ,"}));
  EXPECT_EQ(te({"gzip"})->status, http::status::bad_request);
  EXPECT_EQ(te({"chunked, gzip"})->status, http::status::bad_request);
  EXPECT_EQ(te({"chunked", "gzip"})->status, http::status::bad_request);
  EXPECT_EQ(te({"chunked, chunked"})->status, http::status::bad_request);
  EXPECT_EQ(te({""})->status, http::status::bad_request);
  EXPECT_EQ(te({"chunked"}, 10)->status, http::status::bad_request);
  EXPECT_EQ(te({"gzip, chunked"})->status, http::status::not_implemented);
  EXPECT_EQ(te({"gzip", "chunked"})->status, http::status::not_implemented);
  auto both = header_with({{F::host, "x"}, {F::transfer_encoding, "chunked"}});
  both.insert(F::content_length, "3");
  EXPECT_EQ(check_framing(both)->status, http::status::bad_request);
}

// The server writes a response's head in one piece; it must be byte for byte what Beast's
// serializer writes.
TEST(WireHead, IsWhatBeastsSerializerWrites) {
  std::vector<Response> cases;
  cases.push_back(json_response(http::status::ok, {{"hello", "world"}}));
  cases.back().keep_alive(true);
  cases.push_back(error_response(http::status::not_found, "not_found", "no such function"));
  cases.back().keep_alive(false);
  Response old_client{http::status::ok, 10};
  old_client.set(http::field::content_type, "text/plain");
  old_client.body() = "hi";
  old_client.keep_alive(true);
  cases.push_back(old_client);
  Response custom{http::status::ok, 11};
  custom.result(299);
  custom.reason(reason_phrase(299));
  custom.insert("Set-Cookie", "a=1");
  custom.insert("Set-Cookie", "b=2");
  custom.set("X-Ember-Request-Id", "5d1c");
  custom.body() = std::string(3000, 'x');
  cases.push_back(custom);
  Response empty{http::status::no_content, 11};
  empty.set(http::field::server, "ember");
  cases.push_back(empty);
  for (auto& res : cases) {
    res.prepare_payload();
    std::ostringstream beast;
    beast << res;
    EXPECT_EQ(wire_head(res) + res.body(), beast.str());
  }
}

}  // namespace
}  // namespace ember::gateway
