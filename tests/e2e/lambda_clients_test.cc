// The Lambda API driven by real clients, unmodified: the AWS SDK for JavaScript v3
// (tests/clients, installed by scripts/setup --test) and the AWS CLI (Debian's awscli, v2),
// each pointed at Ember with its endpoint setting.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "archive_builder.h"
#include "daemon.h"
#include "ember/common/text.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kCli = "/usr/bin/aws";

struct Run {
  int status = -1;
  std::string output;
};

// Runs `command` with sh, stdout and stderr together.
Run run(const std::string& command) {
  Run r;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

class LambdaClientsE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
    json manifest = {{"runtime", "node"}, {"handler", "index.handler"}, {"auth", "token"}};
    auto r = daemon_.admin("PUT", "/v1/functions/sdk-fn",
                           ArchiveBuilder(ArchiveKind::kZip)
                               .file("function.json", manifest.dump())
                               .file("index.js", R"(exports.handler = async (event) => {
  console.log('hello from', event.name);
  if (event.fail) throw new TypeError('told to fail');
  return { greeting: 'hi ' + event.name };
};
)")
                               .build());
    ASSERT_EQ(r.status, 201) << r.body;
    auto k = daemon_.admin("POST", "/v1/functions/sdk-fn/keys");
    ASSERT_EQ(k.status, 201) << k.body;
    key_ = k.json();
    endpoint_ = "http://127.0.0.1:" + std::to_string(daemon_.port());
  }
  void TearDown() override {
    if (daemon_.running()) {
      EXPECT_EQ(daemon_.stop(SIGTERM), 0) << daemon_.log();
    }
  }

  // The environment a client runs with: built from scratch, credentials given.
  std::string env(const std::string& id, const std::string& secret) const {
    return "env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=" + quoted(tmp_.path().string()) +
           " AWS_ACCESS_KEY_ID=" + quoted(id) + " AWS_SECRET_ACCESS_KEY=" + quoted(secret) +
           " AWS_DEFAULT_REGION=us-east-1 AWS_MAX_ATTEMPTS=1 AWS_PAGER= ";
  }

  TempDir tmp_;
  Daemon daemon_{tmp_ / "state"};
  json key_;
  std::string endpoint_;
};

TEST_F(LambdaClientsE2E, TheAwsSdkForJavaScriptWorksUnmodified) {
  const fs::path dir = EMBER_CLIENTS_DIR;
  if (!fs::exists(dir / "node_modules" / "@aws-sdk" / "client-lambda")) {
    GTEST_SKIP() << "@aws-sdk/client-lambda is not installed in " << dir
                 << " (scripts/setup --test installs it with npm ci)";
  }
  auto r = run(env(key_["id"], key_["secret"]) + "/usr/bin/node " +
               quoted((dir / "sdk_check.mjs").string()) + " " + endpoint_ + " " +
               quoted(key_["id"]) + " " + quoted(key_["secret"]) + " " + quoted(kTestToken));
  ASSERT_EQ(r.status, 0) << r.output;
  json out = json::parse(
      r.output.substr(r.output.rfind("\n{") == std::string::npos ? 0 : r.output.rfind("\n{") + 1),
      nullptr, false);
  ASSERT_TRUE(out.is_object()) << r.output;
  EXPECT_EQ(out["invoke"]["status"], 200);
  EXPECT_EQ(out["invoke"]["payload"]["greeting"], "hi sdk");
  EXPECT_EQ(out["invoke"]["version"], "1");
  EXPECT_TRUE(out["invoke"]["functionError"].is_null());
  EXPECT_NE(out["invoke"]["log"].get<std::string>().find("hello from sdk"), std::string::npos)
      << out["invoke"]["log"];
  EXPECT_EQ(out["error"]["status"], 200);
  EXPECT_EQ(out["error"]["functionError"], "Unhandled");
  EXPECT_EQ(out["error"]["payload"]["errorType"], "TypeError");
  EXPECT_EQ(out["event"]["status"], 202) << "InvocationType Event is queued";
  EXPECT_EQ(out["get"]["name"], "sdk-fn");
  EXPECT_EQ(out["get"]["state"], "Active");
  EXPECT_EQ(out["list"], json::array({"sdk-fn"}));
  EXPECT_EQ(out["badSecret"], "InvalidSignatureException");
  EXPECT_EQ(out["keyManages"], "AccessDeniedException");
}

TEST_F(LambdaClientsE2E, TheAwsCliWorksUnmodified) {
  if (::access(kCli, X_OK) != 0) {
    GTEST_SKIP() << kCli << " is missing (scripts/setup --test installs Debian's awscli)";
  }
  const std::string cli = std::string(kCli) + " --endpoint-url " + endpoint_ + " lambda ";
  const fs::path result = tmp_.path() / "out.json";
  auto invoke = run(env(key_["id"], key_["secret"]) + cli +
                    "invoke --function-name sdk-fn --cli-binary-format raw-in-base64-out "
                    "--payload '{\"name\":\"cli\"}' --log-type Tail " +
                    quoted(result.string()));
  ASSERT_EQ(invoke.status, 0) << invoke.output;
  json printed = json::parse(invoke.output, nullptr, false);
  ASSERT_TRUE(printed.is_object()) << invoke.output;
  EXPECT_EQ(printed["StatusCode"], 200);
  EXPECT_EQ(printed["ExecutedVersion"], "1");
  auto log = base64_decode(printed["LogResult"].get<std::string>());
  ASSERT_TRUE(log.has_value());
  EXPECT_NE(log->find("hello from cli"), std::string::npos) << *log;
  std::ifstream in(result);
  std::string body((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(json::parse(body, nullptr, false)["greeting"], "hi cli") << body;

  auto failed = run(env(key_["id"], key_["secret"]) + cli +
                    "invoke --function-name sdk-fn --cli-binary-format raw-in-base64-out "
                    "--payload '{\"fail\":true}' " +
                    quoted(result.string()));
  ASSERT_EQ(failed.status, 0) << failed.output;
  EXPECT_EQ(json::parse(failed.output, nullptr, false)["FunctionError"], "Unhandled")
      << failed.output;

  auto got = run(env("admin", kTestToken) + cli + "get-function --function-name sdk-fn");
  ASSERT_EQ(got.status, 0) << got.output;
  EXPECT_EQ(json::parse(got.output, nullptr, false)["Configuration"]["FunctionName"], "sdk-fn");
  auto listed = run(env("admin", kTestToken) + cli + "list-functions");
  ASSERT_EQ(listed.status, 0) << listed.output;
  EXPECT_EQ(json::parse(listed.output, nullptr, false)["Functions"].size(), 1u) << listed.output;
  // An Event invocation is queued and answered 202; it runs afterwards.
  auto queued = run(env(key_["id"], key_["secret"]) + cli +
                    "invoke --function-name sdk-fn --invocation-type Event "
                    "--cli-binary-format raw-in-base64-out --payload '{\"name\":\"later\"}' " +
                    quoted(result.string()));
  ASSERT_EQ(queued.status, 0) << queued.output;
  EXPECT_EQ(json::parse(queued.output, nullptr, false)["StatusCode"], 202) << queued.output;

  // Versions and aliases: publish-version names the active version; an alias with a canary share
  // routes --qualifier calls; the CLI reads both back.
  const std::string admin = env("admin", kTestToken) + cli;
  auto published = run(admin + "publish-version --function-name sdk-fn");
  ASSERT_EQ(published.status, 0) << published.output;
  EXPECT_EQ(json::parse(published.output, nullptr, false)["Version"], "1") << published.output;
  auto alias = run(admin +
                   "create-alias --function-name sdk-fn --name live --function-version 1 "
                   "--description prod");
  ASSERT_EQ(alias.status, 0) << alias.output;
  EXPECT_EQ(json::parse(alias.output, nullptr, false)["AliasArn"],
            "arn:aws:lambda:us-east-1:000000000000:function:sdk-fn:live")
      << alias.output;
  auto again = run(admin + "create-alias --function-name sdk-fn --name live --function-version 1");
  EXPECT_NE(again.status, 0);
  EXPECT_NE(again.output.find("ResourceConflictException"), std::string::npos) << again.output;
  auto through = run(env(key_["id"], key_["secret"]) + cli +
                     "invoke --function-name sdk-fn --qualifier live " + quoted(result.string()));
  ASSERT_EQ(through.status, 0) << through.output;
  EXPECT_EQ(json::parse(through.output, nullptr, false)["ExecutedVersion"], "1") << through.output;
  auto updated = run(admin +
                     "update-alias --function-name sdk-fn --name live "
                     "--routing-config AdditionalVersionWeights={1=0.5}");
  EXPECT_NE(updated.status, 0) << "a canary of the alias's own version is refused";
  auto aliases = run(admin + "list-aliases --function-name sdk-fn");
  ASSERT_EQ(aliases.status, 0) << aliases.output;
  EXPECT_EQ(json::parse(aliases.output, nullptr, false)["Aliases"][0]["Name"], "live");
  auto versions = run(admin + "list-versions-by-function --function-name sdk-fn");
  ASSERT_EQ(versions.status, 0) << versions.output;
  auto listed_versions = json::parse(versions.output, nullptr, false)["Versions"];
  ASSERT_EQ(listed_versions.size(), 2u) << versions.output;
  EXPECT_EQ(listed_versions[0]["Version"], "$LATEST");
  EXPECT_EQ(listed_versions[1]["Version"], "1");
  ASSERT_EQ(run(admin + "delete-alias --function-name sdk-fn --name live").status, 0);
  auto gone = run(admin + "get-alias --function-name sdk-fn --name live");
  EXPECT_NE(gone.output.find("ResourceNotFoundException"), std::string::npos) << gone.output;

  auto denied = run(env(key_["id"], "wrong") + cli + "invoke --function-name sdk-fn " +
                    quoted(result.string()));
  EXPECT_NE(denied.status, 0);
  EXPECT_NE(denied.output.find("InvalidSignatureException"), std::string::npos) << denied.output;
}

}  // namespace
}  // namespace ember::testing
