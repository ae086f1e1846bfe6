// Lambda functions run unmodified: handlers written the way AWS's Lambda documentation writes
// them (tests/fixtures/lambda, one bundle per folder) are deployed as they are and called through
// the HTTP trigger, which hands them a function URL event (payload format 2.0) and reads their
// answer as function URLs do, and through POST /v1/functions/NAME/invoke. Every module flavour and
// answer style of Node, the context object and environment of both runtimes, Python's logging
// format and import path, and unhandled errors: generic to an HTTP client, detailed on invoke and
// in the function's log.
//
// Lines marked `// contract:` pin a detail of the behaviour being built that the brief left open;
// each names the assumption so it can be adjusted in one place.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "archive_builder.h"
#include "daemon.h"
#include "ember/common/text.h"
#include "eventually.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kFixtures = EMBER_LAMBDA_FIXTURES_DIR;
constexpr const char* kNode = "/usr/bin/node";
constexpr const char* kPython = "/usr/bin/python3";

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

// A fixture folder as a zip, its files in a stable order. Bytecode caches and installed modules
// are left out: a fixture is its own source files and nothing else.
std::string zip_folder(const fs::path& dir) {
  std::vector<fs::path> files;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator();
       ++it) {
    const std::string name = it->path().filename().string();
    if (it->is_directory() && (name == "__pycache__" || name == "node_modules")) {
      it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file()) files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  ArchiveBuilder zip(ArchiveKind::kZip);
  for (const auto& f : files) zip.file(fs::relative(f, dir).generic_string(), read_text(f));
  return zip.build();
}

// An answer read off the wire: http_client.h keeps one value per header name and drops the
// reason phrase, and these tests need every Set-Cookie line and the status line as sent.
struct Reply {
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;  // lower-case names, in order
  std::string body;

  std::vector<std::string> all(const std::string& name) const {
    std::vector<std::string> out;
    for (const auto& [k, v] : headers) {
      if (k == name) out.push_back(v);
    }
    return out;
  }
  std::string header(const std::string& name) const {
    auto values = all(name);
    return values.empty() ? "" : values.front();
  }
  json parsed() const { return json::parse(body, nullptr, false); }
};

std::string dechunk(const std::string& in) {
  std::string out;
  size_t pos = 0;
  while (pos < in.size()) {
    const size_t eol = in.find("\r\n", pos);
    if (eol == std::string::npos) break;
    const size_t n = std::stoul(in.substr(pos, eol - pos), nullptr, 16);
    if (n == 0) break;
    out += in.substr(eol + 2, n);
    pos = eol + 2 + n + 2;
  }
  return out;
}

Reply parse_reply(const std::string& raw) {
  Reply r;
  const size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos) return r;
  std::istringstream head(raw.substr(0, head_end));
  std::string line;
  auto next_line = [&] {
    if (!std::getline(head, line)) return false;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return true;
  };
  // "HTTP/1.1 418 I'm a teapot"
  if (!next_line() || line.rfind("HTTP/1.", 0) != 0 || line.size() < 12) return r;
  r.status = std::stoi(line.substr(9, 3));
  r.reason = line.size() > 13 ? line.substr(13) : "";
  while (next_line()) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    value.erase(value.find_last_not_of(" \t") + 1);
    r.headers.emplace_back(lower(line.substr(0, colon)), value);
  }
  const std::string rest = raw.substr(head_end + 4);
  if (contains(lower(r.header("transfer-encoding")), "chunked")) {
    r.body = dechunk(rest);
  } else if (!r.header("content-length").empty()) {
    r.body = rest.substr(0, std::stoul(r.header("content-length")));
  } else {
    r.body = rest;
  }
  return r;
}

// One daemon for the suite with every fixture deployed under its folder's name. Each test then
// only calls functions, so a test that runs alone (as ctest runs them) pays one start-up.
class LambdaFunctionsE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = std::make_unique<TempDir>();
    daemon_ = std::make_unique<Daemon>(tmp_->path() / "state");
    deploys_.clear();
    setup_error_.clear();
    if (!daemon_->start()) {
      setup_error_ = "emberd did not start:\n" + daemon_->log();
      return;
    }
    for (const auto& e : fs::directory_iterator(kFixtures)) {
      if (!e.is_directory()) continue;
      const std::string name = e.path().filename().string();
      deploys_[name] = daemon_->admin("PUT", "/v1/functions/" + name, zip_folder(e.path()));
    }
  }
  static void TearDownTestSuite() {
    if (daemon_ && daemon_->running()) {
      const int rc = daemon_->stop(SIGTERM);
      if (rc != 0) {
        ADD_FAILURE() << "emberd exited with " << rc << ":\n" << daemon_->log();
      }
    }
    daemon_.reset();
    tmp_.reset();
  }

  void SetUp() override { ASSERT_TRUE(setup_error_.empty()) << setup_error_; }

  // Asserts that `name` was deployed; call through ASSERT_NO_FATAL_FAILURE.
  static void expect_deployed(const std::string& name) {
    auto it = deploys_.find(name);
    ASSERT_TRUE(it != deploys_.end()) << "no fixture folder " << (kFixtures / name);
    ASSERT_EQ(it->second.status, 201) << name << ": " << it->second.body;
  }

  // A request on its own connection, read raw (see Reply). `headers` may repeat a name.
  static Reply fn(const std::string& method, const std::string& target,
                  const std::string& body = "",
                  const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    std::string req = method + " " + target + " HTTP/1.1\r\nHost: localhost\r\n";
    req += "Connection: close\r\n";
    for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
    if (!body.empty() || method == "POST" || method == "PUT") {
      req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    }
    req += "\r\n" + body;
    return parse_reply(raw_exchange(daemon_->port(), req, 15000));
  }

  static HttpResponse invoke(const std::string& name, const std::string& event = "{}") {
    return http_request(daemon_->port(), "POST", "/v1/functions/" + name + "/invoke", event);
  }

  // Every line of the function's log so far, oldest first.
  static std::vector<json> log_lines(const std::string& name) {
    std::vector<json> out;
    int64_t since = 0;
    for (int page = 0; page < 100; ++page) {
      auto r = daemon_->admin(
          "GET", "/v1/functions/" + name + "/logs?since=" + std::to_string(since) + "&limit=1000");
      if (r.status != 200) break;
      json j = json::parse(r.body, nullptr, false);
      if (!j.is_object() || !j["lines"].is_array() || j["lines"].empty()) break;
      for (const auto& l : j["lines"]) out.push_back(l);
      if (!j["next"].is_number_integer()) break;
      since = j["next"].get<int64_t>();
    }
    return out;
  }
  static std::string text_of(const json& line) {
    return line.contains("text") && line["text"].is_string() ? line["text"].get<std::string>() : "";
  }
  static std::string request_of(const json& line) {
    return line.contains("request_id") && line["request_id"].is_string()
               ? line["request_id"].get<std::string>()
               : "";
  }
  // The first line of the function's log that satisfies `match`, waited for: lines reach the
  // store on their own schedule. Null when none came; `all` then holds the whole log.
  template <class F>
  static json wait_for_line(const std::string& name, F match, std::string* all = nullptr) {
    json found;
    std::vector<json> lines;
    eventually(
        [&] {
          lines = log_lines(name);
          for (const auto& l : lines) {
            if (match(l)) {
              found = l;
              return true;
            }
          }
          return false;
        },
        std::chrono::milliseconds(5000));
    if (all) {
      for (const auto& l : lines) *all += l.dump() + "\n";
    }
    return found;
  }

  inline static std::unique_ptr<TempDir> tmp_;
  inline static std::unique_ptr<Daemon> daemon_;
  inline static std::map<std::string, HttpResponse> deploys_;
  inline static std::string setup_error_;
};

class NodeFunctionsE2E : public LambdaFunctionsE2E {
 protected:
  void SetUp() override {
    if (::access(kNode, X_OK) != 0) GTEST_SKIP() << kNode << " is not installed";
    LambdaFunctionsE2E::SetUp();
  }
};

class PythonFunctionsE2E : public LambdaFunctionsE2E {
 protected:
  void SetUp() override {
    if (::access(kPython, X_OK) != 0) GTEST_SKIP() << kPython << " is not installed";
    LambdaFunctionsE2E::SetUp();
  }
};

// What a client of a function URL may see of an unhandled error: the request id to quote, and
// nothing of the error itself (message, file paths, stack frames).
void expect_generic_error(const Reply& r, const std::string& secret) {
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_EQ(r.header("x-ember-function-error"), "Unhandled");
  const std::string rid = r.header("x-ember-request-id");
  ASSERT_FALSE(rid.empty());
  EXPECT_TRUE(contains(r.body, rid)) << r.body;
  EXPECT_FALSE(contains(r.body, "boom")) << r.body;
  EXPECT_FALSE(contains(r.body, secret)) << r.body;
  EXPECT_FALSE(contains(r.body, "/var/task")) << r.body;
  EXPECT_FALSE(contains(r.body, "Traceback")) << r.body;
  // contract: "no stack text" is read as no frame shapes: `at fn (`, `file.js:3`, `line 3`.
  static const std::regex kFrame(R"(\bat [\w.<>$]+ \(|\.(js|mjs|cjs|py)\b|\bline \d+)");
  EXPECT_FALSE(std::regex_search(r.body, kFrame)) << r.body;
}

TEST_F(LambdaFunctionsE2E, EveryFixtureDeploysAsVersionOne) {
  EXPECT_GE(deploys_.size(), 15u) << "fixtures read from " << kFixtures;
  for (const auto& [name, r] : deploys_) {
    EXPECT_EQ(r.status, 201) << name << ": " << r.body;
    json record = json::parse(r.body, nullptr, false);
    if (record.is_object()) {
      EXPECT_EQ(record["active_version"], 1) << name;
    }
  }
}

TEST_F(NodeFunctionsE2E, HttpEventIsAFunctionUrlPayload) {
  ASSERT_NO_FATAL_FAILURE(expect_deployed("node-cjs-url"));
  const auto before = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  auto r = fn("GET", "/fn/node-cjs-url/a%2Fb/c?tag=a&tag=b&x=1", "",
              {{"Cookie", "s=1; t=2"}, {"User-Agent", "ember-test"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(contains(r.header("content-type"), "application/json"));
  EXPECT_EQ(r.header("x-custom-header"), "node-cjs-url");
  EXPECT_EQ(r.all("set-cookie"),
            (std::vector<std::string>{"visited=true; Path=/; HttpOnly", "lang=en; Path=/"}));
  json out = r.parsed();
  ASSERT_TRUE(out.is_object()) << r.body;

  // What the handler read through the documented fields.
  EXPECT_EQ(out["method"], "GET");
  EXPECT_EQ(out["path"], "/a%2Fb/c");
  EXPECT_EQ(out["query"], "tag=a&tag=b&x=1");
  EXPECT_EQ(out["params"], (json{{"tag", "a,b"}, {"x", "1"}}));
  EXPECT_EQ(out["cookies"], json::array({"s=1", "t=2"}));
  EXPECT_EQ(out["userAgent"], "ember-test");

  json e = out["event"];
  ASSERT_TRUE(e.is_object()) << r.body;
  EXPECT_EQ(e["version"], "2.0");
  EXPECT_EQ(e["routeKey"], "$default");
  EXPECT_EQ(e["rawPath"], "/a%2Fb/c") << "the path after /fn/NAME as sent";
  EXPECT_EQ(e["rawQueryString"], "tag=a&tag=b&x=1");
  EXPECT_EQ(e["cookies"], json::array({"s=1", "t=2"}));
  EXPECT_EQ(e["queryStringParameters"], (json{{"tag", "a,b"}, {"x", "1"}}));
  ASSERT_TRUE(e["headers"].is_object());
  EXPECT_FALSE(e["headers"].contains("cookie")) << "cookies travel in `cookies` only";
  EXPECT_EQ(e["headers"]["user-agent"], "ember-test");
  EXPECT_FALSE(e.contains("body")) << "no body was sent";
  // contract: isBase64Encoded may be present without a body (function URLs send false).
  if (e.contains("isBase64Encoded")) {
    EXPECT_EQ(e["isBase64Encoded"], false);
  }

  json rc = e["requestContext"];
  ASSERT_TRUE(rc.is_object()) << r.body;
  EXPECT_EQ(rc["http"]["method"], "GET");
  EXPECT_EQ(rc["http"]["path"], "/a%2Fb/c");
  EXPECT_EQ(rc["http"]["protocol"], "HTTP/1.1");
  EXPECT_EQ(rc["http"]["sourceIp"], "127.0.0.1");
  EXPECT_EQ(rc["http"]["userAgent"], "ember-test");
  ASSERT_FALSE(r.header("x-ember-request-id").empty());
  EXPECT_EQ(rc["requestId"], r.header("x-ember-request-id"));
  ASSERT_TRUE(rc["time"].is_string());
  // 06/Dec/2026:15:51:10 +0000
  static const std::regex kClf(R"(^\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000$)");
  EXPECT_TRUE(std::regex_match(rc["time"].get<std::string>(), kClf)) << rc["time"];
  ASSERT_TRUE(rc["timeEpoch"].is_number()) << rc;
  const auto epoch = rc["timeEpoch"].get<int64_t>();
  EXPECT_GE(epoch, before - 60'000) << "timeEpoch is in milliseconds, near now";
  EXPECT_LE(epoch, before + 60'000) << "timeEpoch is in milliseconds, near now";

  // Ember's own fields stay beside Lambda's.
  EXPECT_EQ(e["method"], "GET");
  // contract: the older `path` decodes %2F like any escape.
  EXPECT_EQ(e["path"], "/a/b/c");
  // contract: only single-valued parameters are pinned for the older `query`.
  EXPECT_EQ(e["query"]["x"], "1");
}

TEST_F(NodeFunctionsE2E, RepeatedRequestHeadersAreJoinedUnderLowerCaseNames) {
  ASSERT_NO_FATAL_FAILURE(expect_deployed("node-cjs-url"));
  auto r = fn("GET", "/fn/node-cjs-url/headers", "",
              {{"X-Multi", "one"}, {"X-Multi", "two"}, {"X-Mixed-Case", "Value"}});
  ASSERT_EQ(r.status, 200) << r.body;
  json headers = r.parsed()["event"]["headers"];
  ASSERT_TRUE(headers.is_object()) << r.body;
  for (const auto& item : headers.items()) {
    EXPECT_EQ(item.key(), lower(item.key())) << "header names are lower case";
  }
  // contract: joined with "," as function URLs do, or ", " as docs/functions.md says today.
  const std::string multi = headers.value("x-multi", "");
  EXPECT_TRUE(multi == "one,two" || multi == "one, two") << multi;
  EXPECT_EQ(headers["x-mixed-case"], "Value") << "values keep their case";
}

TEST_F(NodeFunctionsE2E, AbsentQueryCookiesAndBodyAreLeftOut) {
  ASSERT_NO_FATAL_FAILURE(expect_deployed("node-cjs-url"));
  auto r = fn("GET", "/fn/node-cjs-url/plain");
  ASSERT_EQ(r.status, 200) << r.body;
  json out = r.parsed();
  json e = out["event"];
  ASSERT_TRUE(e.is_object()) << r.body;
  EXPECT_FALSE(e.contains("queryStringParameters")) << e;
  EXPECT_FALSE(e.contains("cookies")) << e;
  EXPECT_FALSE(e.contains("body")) << e;
  // contract: rawQueryString is the empty string, not absent, as on function URLs.
  EXPECT_EQ(e["rawQueryString"], "");
  EXPECT_EQ(e["rawPath"], "/plain");
  EXPECT_EQ(out["params"], json::object()) << "the handler's `|| {}` default applied";
  EXPECT_EQ(out["cookies"], json::array());
}

TEST_F(NodeFunctionsE2E, BinaryBodyArrivesBase64Encoded) {
  ASSERT_NO_FATAL_FAILURE(expect_deployed("node-cjs-url"));
  const std::string bytes("\xff\xfe\x00\x01", 4);
  auto bin =
      fn("POST", "/fn/node-cjs-url/upload", bytes, {{"Content-Type", "application/octet-stream"}});
  ASSERT_EQ(bin.status, 200) << bin.body;
  json out = bin.parsed();
  EXPECT_EQ(out["event"]["requestContext"]["http"]["method"], "POST");
  EXPECT_EQ(out["event"]["isBase64Encoded"], true);
  EXPECT_EQ(out["event"]["body"], base64_encode(bytes));
  EXPECT_EQ(out["bodyHex"], "fffe0001") << "Buffer.from(event.body, 'base64') gives the bytes";

  const std::string text = "h\xc3\xa9llo";  // UTF-8 text stays text
  auto txt = fn("POST", "/fn/node-cjs-url/upload", text, {{"Content-Type", "text/plain"}});
  ASSERT_EQ(txt.status, 200) << txt.body;
  EXPECT_EQ(txt.parsed()["event"]["isBase64Encoded"], false);
  EXPECT_EQ(txt.parsed()["event"]["body"], text);
  EXPECT_EQ(txt.parsed()["body"], text);
}

TEST_F(NodeFunctionsE2E, CookiesMultiValueHeadersAndArraysBecomeHeaderLines) {
  ASSERT_NO_FATAL_FAILURE(expect_deployed("node-responses"));
  auto r = fn("GET", "/fn/node-responses/multi");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "ok");
  EXPECT_TRUE(contains(r.header("content-type"), "text/plain"));
  EXPECT_EQ(r.all("set-cookie"), (std::vector<std::string>{"a=1; Path=/", "b=2; HttpOnly"}));
  // contract: one line per value, in the order given (not one comma-joined line).
  EXPECT_EQ(r.all("x-multi"), (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(r.all("x-array"), (std::vector<std::string>{"a", "b"}));
}

TEST_F(NodeFunctionsE2E, TeapotKeepsItsReasonPhrase) {
  ASSERT_NO_FATAL_FAILURE(expect_deployed("node-responses"));
  auto r = fn("GET", "/fn/node-responses/teapot");
  EXPECT_EQ(r.status, 418);
  EXPECT_EQ(r.reason, "I'm a teapot");
  EXPECT_EQ(r.body, "short and stout");
}

TEST_F(NodeFunctionsE2E, ValueWithoutStatusCodeIsJsonAndBase64BodyIsDecoded) {
  ASSERT_NO_FATAL_FAILURE(expect_deployed("node-responses"));
  auto plain = fn("GET", "/fn/node-responses/plain");
  ASSERT_EQ(plain.status, 200) << plain.body;
  EXPECT_TRUE(contains(plain.header("content-type"), "application/json"));
  EXPECT_EQ(plain.parsed(), json::parse(R"({"message": "no statusCode here", "items": [1, 2]})"));

  auto binary = fn("GET", "/fn/node-responses/binary");
  ASSERT_EQ(binary.status, 200) << binary.body;
  EXPECT_EQ(binary.header("content-type"), "application/octet-stream");
  EXPECT_EQ(binary.body, std::string("\xff\x00\x7f", 3));
}

TEST_F(NodeFunctionsE2E, MalformedResponsesAre502BadResponseWithTheReasonLogged) {
  ASSERT_NO_FATAL_FAILURE(expect_deployed("node-responses"));
  // contract: the log line names what is wrong by the field's name (matched case-insensitively):
  // "statusCode" for a string or out-of-range status, "base64", "cookies", the header's name.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"/bad/status-string", "statusCode"},
      {"/bad/status-600", "statusCode"},
      {"/bad/base64", "base64"},
      {"/bad/cookies", "cookies"},
      {"/bad/header-object", "x-bad"},
  };
  for (const auto& c : cases) {
    const std::string path = c.first, reason = c.second;
    SCOPED_TRACE(path);
    auto r = fn("GET", "/fn/node-responses" + path);
    EXPECT_EQ(r.status, 502) << r.body;
    EXPECT_TRUE(contains(r.header("content-type"), "application/json"));
    // contract: Ember's error shape from docs/api.md, {"error": {"code", "message"}}.
    json body = r.parsed();
    ASSERT_TRUE(body.is_object() && body["error"].is_object()) << r.body;
    EXPECT_EQ(body["error"]["code"], "bad_response") << r.body;
    ASSERT_TRUE(body["error"]["message"].is_string()) << r.body;
    EXPECT_FALSE(body["error"]["message"].get<std::string>().empty());
    // contract: a bad_response answer carries X-Ember-Request-Id, and its log line that id.
    const std::string rid = r.header("x-ember-request-id");
    EXPECT_FALSE(rid.empty());
    std::string log;
    json line = wait_for_line(
        "node-responses",
        [&](const json& l) {
          return (rid.empty() || request_of(l) == rid) &&
                 contains(lower(text_of(l)), lower(reason));
        },
        &log);
    EXPECT_FALSE(line.is_null()) << "no log line of " << rid << " mentions " << reason << ":\n"
                                 << log;
  }
}

TEST_F(NodeFunctionsE2E, EveryModuleFlavourLoads) {
  const std::vector<std::pair<std::string, std::string>> flavours = {
      {"node-esm-type-module", "esm-type-module"},  // index.js, package.json "type": "module"
      {"node-mjs", "mjs"},                          // index.mjs, export const handler
      {"node-cjs-ext", "cjs"},                      // app.cjs, module.exports.handler
  };
  for (const auto& [name, flavour] : flavours) {
    SCOPED_TRACE(name);
    ASSERT_NO_FATAL_FAILURE(expect_deployed(name));
    auto r = invoke(name, R"({"n": 7})");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.json()["flavour"], flavour) << r.body;
  }
  auto esm = invoke("node-esm-type-module");
  EXPECT_EQ(esm.json()["config"], (json{{"stage", "fixture"}, {"loaded", true}}))
      << "the top-level await finished before the first event";
  EXPECT_EQ(invoke("node-mjs", R"({"n": 7})").json()["received"]["n"], 7);
  // Through the HTTP trigger a value without statusCode is 200 JSON, whatever the flavour.
  auto url = fn("GET", "/fn/node-cjs-ext/x");
  ASSERT_EQ(url.status, 200) << url.body;
  EXPECT_EQ(url.parsed()["received"]["rawPath"], "/x");
}

TEST_F(NodeFunctionsE2E, CallbackAndContextMethodsAnswer) {
  for (const char* name :
       {"node-callback", "node-context-succeed", "node-context-done", "node-context-fail"}) {
    ASSERT_NO_FATAL_FAILURE(expect_deployed(name));
  }
  auto callback = invoke("node-callback", R"({"name": "ember"})");
  ASSERT_EQ(callback.status, 200) << callback.body;
  EXPECT_EQ(callback.json(), (json{{"style", "callback"}, {"greeting", "hello ember"}}));

  auto succeed = invoke("node-context-succeed", R"({"a": 1})");
  ASSERT_EQ(succeed.status, 200) << succeed.body;
  EXPECT_EQ(succeed.json()["style"], "context.succeed");
  EXPECT_EQ(succeed.json()["received"]["a"], 1);

  auto done = invoke("node-context-done", R"({"b": 2})");
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_EQ(done.json()["style"], "context.done");
  EXPECT_EQ(done.json()["received"]["b"], 2);

  auto fail = invoke("node-context-fail");
  ASSERT_EQ(fail.status, 500) << fail.body;
  EXPECT_EQ(fail.header("x-ember-function-error"), "Unhandled");
  EXPECT_EQ(fail.json()["errorMessage"], "nope");
  // contract: context.fail(new Error(...)) reports the error's own type, as Lambda does.
  EXPECT_EQ(fail.json()["errorType"], "Error");
}

TEST_F(NodeFunctionsE2E, ContextAndEnvironmentAreLambdas) {
  ASSERT_NO_FATAL_FAILURE(expect_deployed("node-esm-type-module"));
  const std::string name = "node-esm-type-module";
  auto r = invoke(name);
  ASSERT_EQ(r.status, 200) << r.body;
  json c = r.json();
  EXPECT_EQ(c["functionName"], name);
  EXPECT_EQ(c["functionVersion"], "1");
  EXPECT_EQ(c["invokedFunctionArn"], "arn:aws:lambda:us-east-1:000000000000:function:" + name);
  EXPECT_EQ(c["memoryLimitInMB"], "256") << "a string, as in Lambda's Node runtime";
  EXPECT_EQ(c["awsRequestId"], r.header("x-ember-request-id"));
  EXPECT_EQ(c["logGroupName"], "/aws/lambda/" + name);
  ASSERT_TRUE(c["logStreamName"].is_string()) << c;
  EXPECT_FALSE(c["logStreamName"].get<std::string>().empty());
  // contract: logStreamName is the stream named in the environment (docs/lambda.md: [1]NAME).
  EXPECT_EQ(c["logStreamName"], c["env"]["AWS_LAMBDA_LOG_STREAM_NAME"]);
  EXPECT_EQ(c["hasTimeLeft"], true);

  json env = c["env"];
  EXPECT_EQ(env["AWS_REGION"], "us-east-1");
  EXPECT_EQ(env["AWS_LAMBDA_FUNCTION_NAME"], name);
  EXPECT_EQ(env["AWS_LAMBDA_FUNCTION_VERSION"], "1");
  EXPECT_EQ(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
  EXPECT_EQ(env["_HANDLER"], "index.handler");
  // Without root the daemon runs --insecure, and the bundle is seen at its host path.
  if (::geteuid() == 0) {
    EXPECT_EQ(env["LAMBDA_TASK_ROOT"], "/var/task");
  } else {
    ASSERT_TRUE(env["LAMBDA_TASK_ROOT"].is_string()) << env;
    EXPECT_EQ(env["LAMBDA_TASK_ROOT"].get<std::string>().rfind('/', 0), 0u) << env;
  }
}

TEST_F(NodeFunctionsE2E, UnhandledErrorIsGenericOnFnAndDetailedOnInvoke) {
  ASSERT_NO_FATAL_FAILURE(expect_deployed("node-throws"));
  auto url = fn("GET", "/fn/node-throws/orders/1");
  expect_generic_error(url, "boom from node");

  auto call = invoke("node-throws");
  ASSERT_EQ(call.status, 500) << call.body;
  EXPECT_EQ(call.header("x-ember-function-error"), "Unhandled");
  json err = call.json();
  EXPECT_EQ(err["errorType"], "Error");
  EXPECT_EQ(err["errorMessage"], "boom from node");
  ASSERT_TRUE(err["stack"].is_array()) << err;
  EXPECT_FALSE(err["stack"].empty());
}

TEST_F(NodeFunctionsE2E, UnhandledErrorIsLoggedAsLambdaLogsIt) {
  ASSERT_NO_FATAL_FAILURE(expect_deployed("node-throws"));
  auto call = invoke("node-throws");
  ASSERT_EQ(call.status, 500) << call.body;
  const std::string rid = call.header("x-ember-request-id");
  std::string log;
  // Lambda's Node runtime: TIME\tREQUEST_ID\tERROR\tInvoke Error \t{"errorType":...}
  json line = wait_for_line(
      "node-throws",
      [&](const json& l) {
        // This call's line: the suite's daemon also logged the errors of earlier tests.
        const std::string t = text_of(l);
        return contains(t, "ERROR\tInvoke Error \t") &&
               contains(t, "\"errorMessage\":\"boom from node\"") && contains(t, rid);
      },
      &log);
  ASSERT_FALSE(line.is_null()) << log;
  // contract: the error line carries the request id of the call, in the text and as request_id.
  EXPECT_EQ(request_of(line), rid) << line;
  EXPECT_TRUE(contains(text_of(line), rid)) << line;

  // What the HTTP client was not told is in the log, under its request id.
  auto url = fn("GET", "/fn/node-throws/orders/2");
  const std::string url_rid = url.header("x-ember-request-id");
  ASSERT_FALSE(url_rid.empty());
  json detail = wait_for_line("node-throws", [&](const json& l) {
    return request_of(l) == url_rid && contains(text_of(l), "boom from node");
  });
  EXPECT_FALSE(detail.is_null()) << log;
}

TEST_F(PythonFunctionsE2E, HttpEventReadsAsInTheLambdaGuide) {
  ASSERT_NO_FATAL_FAILURE(expect_deployed("python-url"));
  auto r = fn("GET", "/fn/python-url/items/42?color=red", "",
              {{"Cookie", "s=1"}, {"User-Agent", "ember-test"}});
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_TRUE(contains(r.header("content-type"), "application/json"));
  EXPECT_EQ(r.header("x-custom-header"), "python-url");
  json out = r.parsed();
  EXPECT_EQ(out["method"], "GET");
  EXPECT_EQ(out["path"], "/items/42");
  EXPECT_EQ(out["params"], (json{{"color", "red"}}));
  EXPECT_EQ(out["cookies"], json::array({"s=1"}));
  EXPECT_EQ(out["userAgent"], "ember-test");

  auto bare = fn("POST", "/fn/python-url/items", "");
  ASSERT_EQ(bare.status, 201) << bare.body;
  json b = bare.parsed();
  EXPECT_EQ(b["method"], "POST");
  EXPECT_TRUE(b["params"].is_null()) << "event.get('queryStringParameters') is None";
  EXPECT_TRUE(b["cookies"].is_null()) << "event.get('cookies') is None";
}

TEST_F(PythonFunctionsE2E, LoggerInfoLinesUseLambdasFormat) {
  ASSERT_NO_FATAL_FAILURE(expect_deployed("python-logging"));
  auto r = invoke("python-logging", R"({"item": "widget"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["processed"], "widget");
  const std::string rid = r.header("x-ember-request-id");
  ASSERT_FALSE(rid.empty());
  std::string log;
  json line = wait_for_line(
      "python-logging",
      [&](const json& l) {
        const std::string t = text_of(l);
        return contains(t, "[INFO]\t") && contains(t, rid) && contains(t, "processing widget");
      },
      &log);
  ASSERT_FALSE(line.is_null()) << log;
  // [INFO]\t2026-12-06T15:51:10.123Z\tREQUEST_ID\tprocessing widget
  static const std::regex kFormat(
      R"(\[INFO\]\t\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\t[^\t]+\tprocessing widget)");
  EXPECT_TRUE(std::regex_search(text_of(line), kFormat)) << line;
  EXPECT_EQ(request_of(line), rid);
  for (const auto& l : log_lines("python-logging")) {
    EXPECT_FALSE(contains(text_of(l), "not shown at INFO")) << "debug is below the level set";
  }
}

TEST_F(PythonFunctionsE2E, OnlyTheStandardLibraryAndTheBundleAreImportable) {
  ASSERT_NO_FATAL_FAILURE(expect_deployed("python-stdlib-only"));
  auto r = invoke("python-stdlib-only", R"({"name": "ember"})");
  ASSERT_EQ(r.status, 200) << r.body;
  json out = r.json();
  EXPECT_EQ(out["yaml"], false) << "the host's dist-packages are not on sys.path: "
                                << out["sys_path"];
  EXPECT_EQ(out["six"], false) << out["sys_path"];
  EXPECT_EQ(out["helper"], "hello ember from helper.py");
}

TEST_F(PythonFunctionsE2E, ContextAndEnvironmentAreLambdas) {
  ASSERT_NO_FATAL_FAILURE(expect_deployed("python-context"));
  const std::string name = "python-context";
  auto r = invoke(name);
  ASSERT_EQ(r.status, 200) << r.body;
  json c = r.json();
  EXPECT_EQ(c["function_name"], name);
  EXPECT_EQ(c["function_version"], "1");
  EXPECT_EQ(c["invoked_function_arn"], "arn:aws:lambda:us-east-1:000000000000:function:" + name);
  // contract: Lambda's Python runtime gives a string; an integer is accepted as well.
  EXPECT_TRUE(c["memory_limit_in_mb"] == "256" || c["memory_limit_in_mb"] == 256) << c;
  EXPECT_EQ(c["aws_request_id"], r.header("x-ember-request-id"));
  EXPECT_EQ(c["log_group_name"], "/aws/lambda/" + name);
  ASSERT_TRUE(c["log_stream_name"].is_string()) << c;
  EXPECT_FALSE(c["log_stream_name"].get<std::string>().empty());
  EXPECT_EQ(c["log_stream_name"], c["env"]["AWS_LAMBDA_LOG_STREAM_NAME"]);
  EXPECT_EQ(c["has_time_left"], true);

  json env = c["env"];
  EXPECT_EQ(env["AWS_REGION"], "us-east-1");
  EXPECT_EQ(env["AWS_LAMBDA_FUNCTION_NAME"], name);
  EXPECT_EQ(env["AWS_LAMBDA_FUNCTION_VERSION"], "1");
  EXPECT_EQ(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
  EXPECT_EQ(env["_HANDLER"], "lambda_function.lambda_handler");
  if (::geteuid() == 0) {
    EXPECT_EQ(env["LAMBDA_TASK_ROOT"], "/var/task");
  } else {
    ASSERT_TRUE(env["LAMBDA_TASK_ROOT"].is_string()) << env;
    EXPECT_EQ(env["LAMBDA_TASK_ROOT"].get<std::string>().rfind('/', 0), 0u) << env;
  }
}

TEST_F(PythonFunctionsE2E, UnhandledErrorIsGenericOnFnDetailedOnInvokeAndLogged) {
  ASSERT_NO_FATAL_FAILURE(expect_deployed("python-raises"));
  auto url = fn("GET", "/fn/python-raises/orders/1");
  expect_generic_error(url, "boom from python");

  auto call = invoke("python-raises");
  ASSERT_EQ(call.status, 500) << call.body;
  EXPECT_EQ(call.header("x-ember-function-error"), "Unhandled");
  json err = call.json();
  EXPECT_EQ(err["errorType"], "ValueError");
  EXPECT_EQ(err["errorMessage"], "boom from python");
  ASSERT_TRUE(err["stack"].is_array()) << err;
  EXPECT_FALSE(err["stack"].empty());

  // contract: the report may be one line or several; each part is looked for on its own, among
  // the lines of this call.
  const std::string rid = call.header("x-ember-request-id");
  std::string log;
  json error_line = wait_for_line(
      "python-raises",
      [&](const json& l) {
        return request_of(l) == rid && contains(text_of(l), "[ERROR] ValueError: boom from python");
      },
      &log);
  EXPECT_FALSE(error_line.is_null()) << log;
  json traceback = wait_for_line("python-raises", [&](const json& l) {
    return request_of(l) == rid && contains(text_of(l), "Traceback (most recent call last):");
  });
  EXPECT_FALSE(traceback.is_null()) << log;
}

}  // namespace
}  // namespace ember::testing
