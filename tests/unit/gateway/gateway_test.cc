#include <gtest/gtest.h>
#include <sys/stat.h>

#include <boost/asio/thread_pool.hpp>

#include "ember/gateway/api.h"
#include "ember/gateway/auth.h"
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

}  // namespace
}  // namespace ember::gateway
