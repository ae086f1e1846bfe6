// Lambda compatibility on Ember's listener: invoke keys (created, shown once, listed without
// their secret, revoked at once) as bearer tokens, and the Lambda Invoke API signed with AWS
// Signature V4 by a key or the admin credential: results, function errors, log tails, versions,
// dry runs and every way a signature can be wrong.
#include <gtest/gtest.h>

#include <ctime>

#include "archive_builder.h"
#include "daemon.h"
#include "ember/common/crypto.h"
#include "ember/common/text.h"
#include "ember/gateway/sigv4.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

using nlohmann::json;

std::string amz_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

class LambdaE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
    deploy("open", "none");
    deploy("locked", "token");
  }
  void TearDown() override {
    if (daemon_.running()) {
      EXPECT_EQ(daemon_.stop(SIGTERM), 0) << daemon_.log();
    }
  }

  void deploy(const std::string& name, const std::string& auth) {
    json manifest = {{"runtime", "node"}, {"handler", "index.handler"}, {"auth", auth}};
    auto r = daemon_.admin("PUT", "/v1/functions/" + name,
                           ArchiveBuilder(ArchiveKind::kZip)
                               .file("function.json", manifest.dump())
                               .file("index.js", R"(exports.handler = async (event, context) => {
  console.log('called with', JSON.stringify(event));
  if (event.fail) throw new RangeError('out of range');
  return { got: event, fn: context.functionName };
};
)")
                               .build());
    ASSERT_EQ(r.status, 201) << r.body;
  }

  json create_key(const std::string& function) {
    auto r = daemon_.admin("POST", "/v1/functions/" + function + "/keys");
    EXPECT_EQ(r.status, 201) << r.body;
    return r.json();
  }

  // POSTs to the Invoke API, signed as the AWS SDKs sign (host, x-amz-date, the Lambda headers
  // and x-amz-content-sha256) unless `id` is empty.
  HttpResponse lambda(const std::string& path, const std::string& body, const std::string& id,
                      const std::string& secret, Headers extra = {},
                      const std::string& date = amz_now()) {
    return signed_request("POST", path, body, id, secret, std::move(extra), date);
  }
  HttpResponse signed_request(const std::string& method, const std::string& path,
                              const std::string& body, const std::string& id,
                              const std::string& secret, Headers extra = {},
                              const std::string& date = amz_now()) {
    Headers headers = extra;
    if (!id.empty()) {
      headers["X-Amz-Date"] = date;
      headers["X-Amz-Content-Sha256"] = sha256_hex(body);
      gateway::sigv4::Request req{method, path, {{"host", "localhost"}}, body};
      std::string names = "host";
      for (const auto& [k, v] : headers) {
        std::string lower = k;
        for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        req.headers.emplace_back(lower, v);
      }
      std::sort(req.headers.begin(), req.headers.end());
      gateway::sigv4::Authorization auth{id, date.substr(0, 8), "us-east-1", "lambda", {}, ""};
      for (const auto& h : req.headers) auth.signed_headers.push_back(h.first);
      std::string signed_list;
      for (const auto& n : auth.signed_headers) signed_list += (signed_list.empty() ? "" : ";") + n;
      headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=" + id + "/" + date.substr(0, 8) +
                                 "/us-east-1/lambda/aws4_request, SignedHeaders=" + signed_list +
                                 ", Signature=" + gateway::sigv4::signature(req, auth, secret);
    }
    return http_request(daemon_.port(), method, path, body, headers);
  }

  static std::string invocations(const std::string& fn) {
    return "/2015-03-31/functions/" + fn + "/invocations";
  }

  TempDir tmp_;
  Daemon daemon_{tmp_ / "state"};
};

TEST_F(LambdaE2E, InvokeKeysAreShownOnceAndRevokedAtOnce) {
  json key = create_key("locked");
  ASSERT_TRUE(key["secret"].is_string());
  const std::string token = key["token"];
  auto bearer = [&](const std::string& t) {
    return http_request(daemon_.port(), "POST", "/v1/functions/locked/invoke", "{}",
                        {{"Authorization", "Bearer " + t}});
  };
  EXPECT_EQ(bearer(token).status, 200);
  EXPECT_EQ(bearer(std::string(kTestToken)).status, 200) << "the admin token still works";
  // On the HTTP trigger too, and the credential never reaches the function.
  auto trigger = http_request(daemon_.port(), "GET", "/fn/locked/x", "",
                              {{"Authorization", "Bearer " + token}, {"X-Other", "kept"}});
  ASSERT_EQ(trigger.status, 200) << trigger.body;
  EXPECT_EQ(trigger.body.find(token), std::string::npos) << trigger.body;
  EXPECT_NE(trigger.body.find("kept"), std::string::npos) << trigger.body;
  EXPECT_EQ(http_request(daemon_.port(), "POST", "/v1/functions/locked/invoke", "{}").status, 401);
  EXPECT_EQ(bearer(key["id"].get<std::string>() + ".wrong").status, 401);
  // A key of another function opens nothing here.
  deploy("other", "token");
  EXPECT_EQ(bearer(create_key("other")["token"]).status, 401);
  // Listed by id, never with the secret.
  auto list = daemon_.admin("GET", "/v1/functions/locked/keys");
  ASSERT_EQ(list.status, 200);
  ASSERT_EQ(list.json()["keys"].size(), 1u);
  EXPECT_EQ(list.json()["keys"][0]["id"], key["id"]);
  EXPECT_EQ(list.body.find(key["secret"].get<std::string>()), std::string::npos);
  // Revoked: refused at the next request.
  EXPECT_EQ(
      daemon_.admin("DELETE", "/v1/functions/locked/keys/" + key["id"].get<std::string>()).status,
      200);
  EXPECT_EQ(bearer(token).status, 401);
  EXPECT_EQ(
      daemon_.admin("DELETE", "/v1/functions/locked/keys/" + key["id"].get<std::string>()).status,
      404);
  // Keys survive a restart.
  json kept = create_key("locked");
  ASSERT_EQ(daemon_.stop(SIGTERM), 0);
  ASSERT_TRUE(daemon_.start()) << daemon_.log();
  EXPECT_EQ(bearer(kept["token"]).status, 200);
}

TEST_F(LambdaE2E, TheInvokeApiAnswersAsLambdaDoes) {
  json key = create_key("locked");
  const std::string id = key["id"], secret = key["secret"];
  auto ok = lambda(invocations("locked"), R"({"a":1})", id, secret);
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.json()["got"]["a"], 1);
  EXPECT_EQ(ok.header("x-amz-executed-version"), "1");
  EXPECT_FALSE(ok.header("x-amzn-requestid").empty());
  EXPECT_TRUE(ok.header("x-amz-function-error").empty());

  auto tail = lambda(invocations("locked"), R"({"b":2})", id, secret, {{"X-Amz-Log-Type", "Tail"}});
  ASSERT_EQ(tail.status, 200) << tail.body;
  auto log = base64_decode(tail.header("x-amz-log-result"));
  ASSERT_TRUE(log.has_value());
  EXPECT_NE(log->find("called with {\"b\":2}"), std::string::npos) << *log;
  EXPECT_NE(log->find("REPORT RequestId: " + tail.header("x-amzn-requestid")), std::string::npos)
      << *log;

  auto error = lambda(invocations("locked"), R"({"fail":true})", id, secret);
  EXPECT_EQ(error.status, 200) << "a function error is still a 200, as on Lambda";
  EXPECT_EQ(error.header("x-amz-function-error"), "Unhandled");
  EXPECT_EQ(error.json()["errorType"], "RangeError");
  EXPECT_EQ(error.json()["errorMessage"], "out of range");
  EXPECT_TRUE(error.json()["stackTrace"].is_array());

  EXPECT_EQ(
      lambda(invocations("locked"), "{}", id, secret, {{"X-Amz-Invocation-Type", "DryRun"}}).status,
      204);
  // The qualifier, in the name, in the query, or in an ARN.
  EXPECT_EQ(lambda(invocations("locked%3A1"), "{}", id, secret).status, 200);
  EXPECT_EQ(lambda(invocations("locked") + "?Qualifier=%24LATEST", "{}", id, secret).status, 200);
  EXPECT_EQ(lambda(invocations("000000000000%3Afunction%3Alocked"), "{}", id, secret).status, 200)
      << "the partial ARN";
  EXPECT_EQ(lambda(invocations("arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Alocked"),
                   "{}", id, secret)
                .status,
            200);
  auto missing_version = lambda(invocations("locked") + "?Qualifier=7", "{}", id, secret);
  EXPECT_EQ(missing_version.status, 404);
  EXPECT_EQ(missing_version.header("x-amzn-errortype"), "ResourceNotFoundException");
  // The admin credential signs for every function; an open function needs no signature.
  EXPECT_EQ(lambda(invocations("locked"), "{}", "admin", kTestToken).status, 200);
  auto open = http_request(daemon_.port(), "POST", invocations("open"), R"({"c":3})");
  EXPECT_EQ(open.status, 200) << open.body;
  // An event over the limit is refused in Lambda's format.
  auto big = http_request(daemon_.port(), "POST", invocations("open"), std::string(7 << 20, ' '));
  EXPECT_EQ(big.status, 413);
  EXPECT_EQ(big.header("x-amzn-errortype"), "RequestTooLargeException");
  auto gone = lambda(invocations("nope"), "{}", "admin", kTestToken);
  EXPECT_EQ(gone.status, 404);
  EXPECT_EQ(gone.header("x-amzn-errortype"), "ResourceNotFoundException");
}

TEST_F(LambdaE2E, EveryWrongSignatureIsRefused) {
  json key = create_key("locked");
  const std::string id = key["id"], secret = key["secret"];
  auto type = [](const HttpResponse& r) { return r.header("x-amzn-errortype"); };
  auto unsigned_call = http_request(daemon_.port(), "POST", invocations("locked"), "{}");
  EXPECT_EQ(unsigned_call.status, 403);
  EXPECT_EQ(type(unsigned_call), "MissingAuthenticationTokenException");
  auto wrong_secret = lambda(invocations("locked"), "{}", id, "not-the-secret");
  EXPECT_EQ(wrong_secret.status, 403);
  EXPECT_EQ(type(wrong_secret), "InvalidSignatureException");
  auto unknown = lambda(invocations("locked"), "{}", "EMBKFFFFFFFFFFFFFFFF", secret);
  EXPECT_EQ(type(unknown), "UnrecognizedClientException");
  deploy("other", "token");
  json other = create_key("other");
  auto elsewhere = lambda(invocations("locked"), "{}", other["id"], other["secret"]);
  EXPECT_EQ(elsewhere.status, 403);
  EXPECT_EQ(type(elsewhere), "AccessDeniedException");
  auto stale = lambda(invocations("locked"), "{}", id, secret, {}, "20200101T000000Z");
  EXPECT_EQ(stale.status, 403);
  EXPECT_EQ(type(stale), "InvalidSignatureException");
  EXPECT_NE(stale.body.find("Signature expired"), std::string::npos) << stale.body;
  auto garbled = http_request(daemon_.port(), "POST", invocations("locked"), "{}",
                              {{"Authorization", "AWS4-HMAC-SHA256 Credential=x"}});
  EXPECT_EQ(garbled.status, 400);
  EXPECT_EQ(type(garbled), "IncompleteSignatureException");
  // Revoked: refused at once.
  ASSERT_EQ(daemon_.admin("DELETE", "/v1/functions/locked/keys/" + id).status, 200);
  EXPECT_EQ(type(lambda(invocations("locked"), "{}", id, secret)), "UnrecognizedClientException");
}

TEST_F(LambdaE2E, FunctionsAreManagedThroughTheLambdaApi) {
  auto admin = [&](const std::string& method, const std::string& path,
                   const std::string& body = "") {
    return signed_request(method, path, body, "admin", kTestToken);
  };
  const std::string zip =
      ArchiveBuilder(ArchiveKind::kZip)
          .file("main.py", "def handler(event, context):\n    return {'v': 1}\n")
          .build();
  json create{{"FunctionName", "made"},
              {"Runtime", "python3.11"},
              {"Role", "arn:aws:iam::123456789012:role/any"},
              {"Handler", "main.handler"},
              {"Timeout", 5},
              {"MemorySize", 256},
              {"Environment", {{"Variables", {{"MODE", "test"}}}}},
              {"Code", {{"ZipFile", base64_encode(zip)}}}};
  auto made = admin("POST", "/2015-03-31/functions", create.dump());
  ASSERT_EQ(made.status, 201) << made.body;
  json config = made.json();
  EXPECT_EQ(config["FunctionName"], "made");
  EXPECT_EQ(config["Runtime"], "python3.11");
  EXPECT_EQ(config["Handler"], "main.handler");
  EXPECT_EQ(config["Timeout"], 5);
  EXPECT_EQ(config["MemorySize"], 256);
  EXPECT_EQ(config["Environment"]["Variables"]["MODE"], "test");
  EXPECT_EQ(config["State"], "Active");
  EXPECT_EQ(config["CodeSha256"], base64_encode([&] {
              std::string raw;
              const std::string h = sha256_hex(zip);
              for (size_t i = 0; i < h.size(); i += 2) {
                raw += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
              }
              return raw;
            }()));
  auto again = admin("POST", "/2015-03-31/functions", create.dump());
  EXPECT_EQ(again.status, 409);
  EXPECT_EQ(again.header("x-amzn-errortype"), "ResourceConflictException");
  EXPECT_EQ(lambda(invocations("made"), "{}", "admin", kTestToken).json()["v"], 1);
  auto unsigned_call = http_request(daemon_.port(), "POST", invocations("made"), "{}");
  EXPECT_EQ(unsigned_call.status, 403) << "made through the Lambda API, it needs credentials";

  auto got = admin("GET", "/2015-03-31/functions/made");
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(got.json()["Configuration"]["FunctionArn"], config["FunctionArn"]);
  // Pages of one: open, locked, made in name order.
  auto page = admin("GET", "/2015-03-31/functions?MaxItems=2");
  ASSERT_EQ(page.status, 200) << page.body;
  ASSERT_EQ(page.json()["Functions"].size(), 2u);
  EXPECT_EQ(page.json()["Functions"][0]["FunctionName"], "locked");
  auto rest = admin("GET", "/2015-03-31/functions?MaxItems=2&Marker=" +
                               page.json()["NextMarker"].get<std::string>());
  ASSERT_EQ(rest.json()["Functions"].size(), 1u);
  EXPECT_EQ(rest.json()["Functions"][0]["FunctionName"], "open");
  EXPECT_FALSE(rest.json().contains("NextMarker"));

  const std::string v2 = ArchiveBuilder(ArchiveKind::kZip)
                             .file("main.py", "def handler(event, context):\n    return {'v': 2}\n")
                             .build();
  auto updated =
      admin("PUT", "/2015-03-31/functions/made/code", json{{"ZipFile", base64_encode(v2)}}.dump());
  ASSERT_EQ(updated.status, 200) << updated.body;
  EXPECT_NE(updated.json()["RevisionId"], config["RevisionId"]);
  EXPECT_EQ(updated.json()["MemorySize"], 256) << "the configuration stays";
  EXPECT_EQ(lambda(invocations("made"), "{}", "admin", kTestToken).json()["v"], 2);

  // An invoke key invokes; it does not manage.
  json key = create_key("made");
  auto denied =
      signed_request("DELETE", "/2015-03-31/functions/made", "", key["id"], key["secret"]);
  EXPECT_EQ(denied.status, 403);
  EXPECT_EQ(denied.header("x-amzn-errortype"), "AccessDeniedException");
  EXPECT_EQ(admin("DELETE", "/2015-03-31/functions/made").status, 204);
  auto gone = admin("GET", "/2015-03-31/functions/made");
  EXPECT_EQ(gone.status, 404);
  EXPECT_EQ(gone.header("x-amzn-errortype"), "ResourceNotFoundException");
  auto bad =
      admin("POST", "/2015-03-31/functions",
            json{{"FunctionName", "x"}, {"Runtime", "java21"}, {"Code", {{"ZipFile", ""}}}}.dump());
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.header("x-amzn-errortype"), "InvalidParameterValueException");
}

}  // namespace
}  // namespace ember::testing
