// The web console served by the real emberd: its files and their security headers, and a user's
// session in headless Chromium (Debian's chromium, driven by puppeteer-core from tests/clients):
// log in, deploy by drag and drop, invoke, see the call's log line and the charts. Screenshots of
// every step go to build/test-output/console/.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "archive_builder.h"
#include "daemon_test.h"

namespace ember::testing {
namespace {

namespace fs = std::filesystem;

using ConsoleE2E = DaemonTest;

TEST_F(ConsoleE2E, FilesAreServedOpenlyUnderAStrictPolicy) {
  auto moved = http_request(daemon_.port(), "GET", "/console");
  EXPECT_EQ(moved.status, 301);
  EXPECT_EQ(moved.header("location"), "/console/");

  // No token: the page holds no secret, it asks for the token.
  auto page = http_request(daemon_.port(), "GET", "/console/");
  ASSERT_EQ(page.status, 200) << page.body;
  EXPECT_EQ(page.header("content-type"), "text/html; charset=utf-8");
  const std::string csp = page.header("content-security-policy");
  EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("script-src 'self'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("connect-src 'self'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("frame-ancestors 'none'"), std::string::npos) << csp;
  EXPECT_EQ(page.header("x-content-type-options"), "nosniff");
  EXPECT_NE(page.body.find("<title>Ember console</title>"), std::string::npos);
  // Every script is a file of the console's own: nothing inline, nothing from elsewhere.
  for (size_t at = page.body.find("<script"); at != std::string::npos;
       at = page.body.find("<script", at + 1)) {
    const std::string tag = page.body.substr(at, page.body.find('>', at) - at);
    EXPECT_NE(tag.find(" src=\""), std::string::npos) << tag;
    EXPECT_EQ(tag.find("//"), std::string::npos) << tag;
  }

  auto script = http_request(daemon_.port(), "GET", "/console/app.js");
  ASSERT_EQ(script.status, 200);
  EXPECT_EQ(script.header("content-type"), "text/javascript; charset=utf-8");
  auto chart = http_request(daemon_.port(), "GET", "/console/vendor/uplot/uPlot.iife.min.js");
  ASSERT_EQ(chart.status, 200);
  EXPECT_NE(chart.body.find("uPlot"), std::string::npos);

  // Revalidation: the same file is a 304 without a body.
  const std::string etag = script.header("etag");
  ASSERT_FALSE(etag.empty());
  auto same = http_request(daemon_.port(), "GET", "/console/app.js", "", {{"If-None-Match", etag}});
  EXPECT_EQ(same.status, 304);
  EXPECT_TRUE(same.body.empty());

  EXPECT_EQ(http_request(daemon_.port(), "GET", "/console/nothing.js").status, 404);
  EXPECT_EQ(http_request(daemon_.port(), "GET", "/console/%2e%2e/admin.token").status, 404);
  EXPECT_EQ(http_request(daemon_.port(), "GET", "/console/..%2fadmin.token").status, 404);
  EXPECT_EQ(http_request(daemon_.port(), "POST", "/console/").status, 405);
  EXPECT_EQ(http_request(daemon_.port(), "HEAD", "/console/").status, 405);
}

// A function's page shares the console's origin: the headers by which it could reach past its
// own folder are dropped from its answers.
TEST_F(ConsoleE2E, AFunctionCannotWidenItsReachOverTheSharedOrigin) {
  ASSERT_EQ(daemon_
                .deploy_code("wide", "node", R"(exports.handler = async () => ({
  statusCode: 200,
  headers: {'content-type': 'text/html', 'service-worker-allowed': '/',
            'cross-origin-opener-policy': 'unsafe-none', 'x-kept': 'yes'},
  body: '<p>hi</p>',
});
)")
                .status,
            201);
  auto r = http_request(daemon_.port(), "GET", "/fn/wide/");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-kept"), "yes");
  // Not the function's "/": emberd's own, the function's folder, so that a service worker the
  // page registers covers this function's pages only.
  EXPECT_EQ(r.header("service-worker-allowed"), "/fn/wide/");
  EXPECT_EQ(r.header("cross-origin-opener-policy"), "");
  auto script = http_request(daemon_.port(), "GET", "/fn/wide");  // default scope would be /fn/
  EXPECT_EQ(script.header("service-worker-allowed"), "/fn/wide/");
  auto qualified = http_request(daemon_.port(), "GET", "/fn/wide:1/sw.js?v=2");
  EXPECT_EQ(qualified.header("service-worker-allowed"), "/fn/wide:1/");
}

TEST_F(ConsoleE2E, AUserLogsInDeploysInvokesAndSeesTheLogAndTheCharts) {
  const fs::path clients = EMBER_CLIENTS_DIR;
  if (!fs::exists("/usr/bin/chromium")) {
    GTEST_SKIP() << "/usr/bin/chromium is missing (scripts/setup --test installs it)";
  }
  if (!fs::exists(clients / "node_modules" / "puppeteer-core")) {
    GTEST_SKIP() << "puppeteer-core is not installed in " << clients
                 << " (scripts/setup --test runs npm ci there)";
  }
  const fs::path bundle = tmp_ / "bundle.zip";
  {
    std::ofstream out(bundle, std::ios::binary);
    out << ArchiveBuilder(ArchiveKind::kZip)
               .file("function.json", R"({"runtime": "node", "handler": "index.handler"})")
               .file("index.js",
                     "exports.handler = async (event) => {\n"
                     "  console.log('greeting', event.name);\n"
                     "  return { hello: event.name };\n"
                     "};\n")
               .build();
  }
  // The page a function serves, from which the check opens the console. Its opener policy, were
  // it sent, would let it keep a handle on the console's window: emberd drops it.
  ASSERT_EQ(daemon_
                .deploy_code("opener", "node", R"(exports.handler = async () => ({
  statusCode: 200,
  headers: {'content-type': 'text/html', 'cross-origin-opener-policy': 'same-origin'},
  body: '<p>a function page</p>',
});
)")
                .status,
            201);
  // A function whose events all end as dead letters, for the dead-letters tab.
  ASSERT_EQ(
      daemon_
          .deploy_code("dead", "node",
                       "exports.handler = async () => { throw new Error('always failing'); };\n",
                       {{"async", {{"retries", 0}}}})
          .status,
      201);
  auto sent = http_request(daemon_.port(), "POST", "/v1/functions/dead/invoke?mode=async", "{}");
  ASSERT_EQ(sent.status, 202) << sent.body;
  ASSERT_EQ(daemon_.wait_for_invocation(sent.json()["id"], "dead")["status"], "dead");
  const fs::path shots = fs::path(EMBER_TEST_OUTPUT_DIR) / "console";
  fs::remove_all(shots);
  const std::string command =
      "cd '" + clients.string() + "' && env -i PATH=/usr/bin:/bin HOME='" + tmp_.path().string() +
      "' /usr/bin/node console_check.mjs http://127.0.0.1:" + std::to_string(daemon_.port()) + " " +
      kTestToken + " '" + bundle.string() + "' '" + shots.string() + "' 2>&1";
  FILE* p = ::popen(command.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string output;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) output.append(buf, n);
  const int status = ::pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output << daemon_.log();
  EXPECT_NE(output.find("console checks passed"), std::string::npos) << output;
  EXPECT_TRUE(fs::exists(shots / "05-invoke.png")) << output;
  EXPECT_TRUE(fs::exists(shots / "07-metrics-chart.png")) << output;
  std::printf("console screenshots: %s\n", shots.c_str());
}

}  // namespace
}  // namespace ember::testing
