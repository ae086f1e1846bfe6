// The HTTP trigger's translation, without a daemon: a request to a function URL event (payload
// format 2.0), and a function's value to the response a function URL sends.
#include "invocation.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace ember::gateway {
namespace {

using nlohmann::json;

Request request(http::verb method, std::string target, std::string body = {}) {
  Request r{method, target, 11};
  r.set(http::field::host, "api.example.com");
  r.body() = std::move(body);
  return r;
}

json event_of(const Request& r) {
  return json::parse(http_event(r, TriggerContext{"rid-1", "10.0.0.7", 1796572888008}));
}

scheduler::InvokeOutcome ok(std::string value) {
  scheduler::InvokeOutcome o;
  o.kind = scheduler::InvokeOutcome::Kind::kOk;
  o.body = std::move(value);
  o.version = 1;
  return o;
}

TEST(HttpEvent, IsAFunctionUrlPayload) {
  auto r = request(http::verb::get, "/fn/shop:live/a%2Fb/c?tag=a&tag=b&q=x%20y");
  r.insert(http::field::cookie, "s=1; t=2");
  r.insert(http::field::cookie, "u=3");
  r.insert("X-Multi", "one");
  r.insert("X-Multi", "two");
  r.set(http::field::user_agent, "curl/8");
  json e = event_of(r);
  EXPECT_EQ(e["version"], "2.0");
  EXPECT_EQ(e["routeKey"], "$default");
  EXPECT_EQ(e["rawPath"], "/a%2Fb/c");
  EXPECT_EQ(e["path"], "/a/b/c") << "Ember's own field is decoded";
  EXPECT_EQ(e["rawQueryString"], "tag=a&tag=b&q=x%20y");
  EXPECT_EQ(e["queryStringParameters"], (json{{"tag", "a,b"}, {"q", "x y"}}));
  EXPECT_EQ(e["cookies"], (json{"s=1", "t=2", "u=3"}));
  EXPECT_FALSE(e["headers"].contains("cookie"));
  EXPECT_EQ(e["headers"]["x-multi"], "one,two");
  EXPECT_EQ(e["headers"]["host"], "api.example.com");
  const json& c = e["requestContext"];
  EXPECT_EQ(c["http"]["method"], "GET");
  EXPECT_EQ(c["http"]["path"], "/a%2Fb/c");
  EXPECT_EQ(c["http"]["protocol"], "HTTP/1.1");
  EXPECT_EQ(c["http"]["sourceIp"], "10.0.0.7");
  EXPECT_EQ(c["http"]["userAgent"], "curl/8");
  EXPECT_EQ(c["requestId"], "rid-1");
  EXPECT_EQ(c["domainName"], "api.example.com");
  EXPECT_EQ(c["domainPrefix"], "api");
  EXPECT_EQ(c["time"], "06/Dec/2026:16:01:28 +0000");
  EXPECT_EQ(c["timeEpoch"], 1796572888008);
  EXPECT_FALSE(e.contains("body"));
  EXPECT_EQ(e["isBase64Encoded"], false);
}

TEST(HttpEvent, PathsWithoutARestAndBinaryBodies) {
  EXPECT_EQ(event_of(request(http::verb::get, "/fn/f"))["rawPath"], "/");
  EXPECT_EQ(event_of(request(http::verb::get, "/fn/f/"))["rawPath"], "/");
  EXPECT_EQ(event_of(request(http::verb::get, "/fn/f/a/"))["rawPath"], "/a/");
  json e = event_of(request(http::verb::get, "/fn/f?x=1"));
  EXPECT_EQ(e["rawPath"], "/");
  EXPECT_EQ(e["rawQueryString"], "x=1");
  json none = event_of(request(http::verb::get, "/fn/f/x"));
  EXPECT_FALSE(none.contains("queryStringParameters"));
  EXPECT_FALSE(none.contains("cookies"));
  EXPECT_EQ(none["rawQueryString"], "");
  json binary = event_of(request(http::verb::post, "/fn/f", std::string("\xff\xfe\x00\x01", 4)));
  EXPECT_EQ(binary["body"], "//4AAQ==");
  EXPECT_EQ(binary["isBase64Encoded"], true);
  json text = event_of(request(http::verb::post, "/fn/f", "héllo"));
  EXPECT_EQ(text["body"], "héllo");
  EXPECT_EQ(text["isBase64Encoded"], false);
}

TEST(TriggerResponse, IsSentAsAFunctionUrlSendsIt) {
  std::string problem;
  auto res = invoke_response(ok(R"({"statusCode": 418, "headers": {"X-A": "1", "X-N": 2,
      "X-List": ["a", "b"], "Content-Length": "999", "Connection": "close"},
      "multiValueHeaders": {"X-M": ["m1", "m2"]}, "cookies": ["a=1", "b=2; Path=/"],
      "body": "aGk=", "isBase64Encoded": true})"),
                             "rid", true, &problem);
  EXPECT_TRUE(problem.empty()) << problem;
  EXPECT_EQ(res.result_int(), 418u);
  EXPECT_EQ(res.reason(), "I'm a teapot");
  EXPECT_EQ(res["X-A"], "1");
  EXPECT_EQ(res["X-N"], "2");
  EXPECT_EQ(res.count("X-List"), 2u);
  EXPECT_EQ(res.count("X-M"), 2u);
  EXPECT_EQ(res.count(http::field::set_cookie), 2u);
  EXPECT_EQ(res.count(http::field::connection), 0u) << "framing is Ember's";
  EXPECT_NE(res[http::field::content_length], "999");
  EXPECT_EQ(res.body(), "hi");
  EXPECT_EQ(res[http::field::content_type], "application/json");

  auto plain = invoke_response(ok(R"("Hello, world!")"), "rid", true, &problem);
  EXPECT_EQ(plain.result_int(), 200u);
  EXPECT_EQ(plain.body(), R"("Hello, world!")") << "JSON text, quotes included, as Lambda sends";
  auto no_content = invoke_response(ok(R"({"statusCode": 204, "body": "x"})"), "rid", true);
  EXPECT_EQ(no_content.body(), "");
}

TEST(TriggerResponse, AMalformedOneIs502WithItsReason) {
  for (const char* value :
       {R"({"statusCode": "200"})", R"({"statusCode": 600})", R"({"statusCode": 101})",
        R"({"statusCode": 200, "body": "%%", "isBase64Encoded": true})",
        R"({"statusCode": 200, "cookies": "a=1"})", R"({"statusCode": 200, "headers": {"X": {}}})",
        R"({"statusCode": 200, "headers": {"X(Y": "1"}})",
        R"({"statusCode": 200, "headers": {"X": "a\u0000b"}})",
        R"({"statusCode": 200, "headers": {"X": "a\r\nSet-Cookie: evil=1"}})"}) {
    std::string problem;
    auto res = invoke_response(ok(value), "rid-9", true, &problem);
    EXPECT_EQ(res.result_int(), 502u) << value;
    EXPECT_FALSE(problem.empty()) << value;
    EXPECT_NE(res.body().find("bad_response"), std::string::npos) << res.body();
    EXPECT_NE(res.body().find("rid-9"), std::string::npos) << res.body();
    EXPECT_EQ(res.count(http::field::set_cookie), 0u);
  }
}

TEST(TriggerResponse, AFunctionErrorTellsThePublicNothingButTheRequestId) {
  scheduler::InvokeOutcome o;
  o.kind = scheduler::InvokeOutcome::Kind::kFunctionError;
  o.body =
      R"({"errorType":"Error","errorMessage":"db password wrong","stack":["/var/task/x.js:3"]})";
  auto trigger = invoke_response(o, "rid-5", true);
  EXPECT_EQ(trigger.result_int(), 502u);
  EXPECT_EQ(trigger.body().find("password"), std::string::npos);
  EXPECT_EQ(trigger.body().find("/var/task"), std::string::npos);
  EXPECT_NE(trigger.body().find("rid-5"), std::string::npos);
  EXPECT_EQ(trigger["X-Ember-Function-Error"], "Unhandled");
  auto api = invoke_response(o, "rid-5", false);
  EXPECT_EQ(api.result_int(), 500u);
  EXPECT_EQ(api.body(), o.body) << "the invoke API returns the error object";
}

TEST(ReasonPhrase, RegisteredOrTheClass) {
  EXPECT_EQ(reason_phrase(418), "I'm a teapot");
  EXPECT_EQ(reason_phrase(404), "Not Found");
  EXPECT_EQ(reason_phrase(299), "Success");
  EXPECT_EQ(reason_phrase(598), "Server Error");
}

}  // namespace
}  // namespace ember::gateway
