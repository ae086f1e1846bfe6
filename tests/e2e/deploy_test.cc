// The deploy half of the API, exercised against the real emberd over HTTP.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include "archive_builder.h"
#include "daemon_test.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const Headers kZip = {{"Content-Type", "application/zip"}};
const Headers kTgz = {{"Content-Type", "application/gzip"}};

std::string node_bundle(ArchiveKind kind, const std::string& code) {
  return ArchiveBuilder(kind)
      .file("function.json", R"({"runtime":"node","handler":"index.handler","memory_mb":128})")
      .file("index.js", code)
      .build();
}

using DeployE2E = DaemonTest;

TEST_F(DeployE2E, ZipAndTarGzThroughTheWholeLifecycle) {
  auto created = daemon_.admin("PUT", "/v1/functions/hello",
                               node_bundle(ArchiveKind::kZip, "exports.handler=()=>1"), kZip);
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(created.header("location"), "/v1/functions/hello");
  EXPECT_EQ(created.json()["active_version"], 1);
  EXPECT_EQ(created.json()["config"]["runtime"], "node");
  EXPECT_EQ(created.json()["bundle_sha256"].get<std::string>().size(), 64u);

  auto updated = daemon_.admin("PUT", "/v1/functions/hello?memory_mb=256",
                               node_bundle(ArchiveKind::kTarGz, "exports.handler=()=>2"), kTgz);
  ASSERT_EQ(updated.status, 200) << updated.body;
  EXPECT_EQ(updated.json()["active_version"], 2);
  EXPECT_EQ(updated.json()["config"]["memory_mb"], 256);

  auto other = daemon_.admin("PUT", "/v1/functions/other",
                             node_bundle(ArchiveKind::kTarGz, "exports.handler=()=>3"));
  ASSERT_EQ(other.status, 201) << "format is sniffed without a Content-Type: " << other.body;

  auto list = daemon_.admin("GET", "/v1/functions");
  ASSERT_EQ(list.status, 200);
  ASSERT_EQ(list.json()["functions"].size(), 2u);
  EXPECT_EQ(list.json()["functions"][0]["name"], "hello");

  auto got = daemon_.admin("GET", "/v1/functions/hello");
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.json()["versions"].size(), 2u);

  auto patched = daemon_.admin("PATCH", "/v1/functions/hello",
                               R"({"timeout_ms": 10000, "env": {"GREETING": "hi"}})");
  ASSERT_EQ(patched.status, 200) << patched.body;
  EXPECT_EQ(patched.json()["active_version"], 3);
  EXPECT_EQ(patched.json()["config"]["timeout_ms"], 10000);
  EXPECT_EQ(patched.json()["config"]["env"]["GREETING"], "hi");
  EXPECT_EQ(patched.json()["config"]["memory_mb"], 256);

  auto rolled = daemon_.admin("POST", "/v1/functions/hello/rollback?to=1");
  ASSERT_EQ(rolled.status, 200) << rolled.body;
  EXPECT_EQ(rolled.json()["active_version"], 1);
  EXPECT_EQ(rolled.json()["config"]["memory_mb"], 128);
  EXPECT_EQ(daemon_.admin("POST", "/v1/functions/hello/rollback?to=9").status, 404);
  EXPECT_EQ(daemon_.admin("POST", "/v1/functions/hello/rollback").status, 400);
  EXPECT_EQ(daemon_.admin("POST", "/v1/functions/hello/rollback?to=x").status, 400);

  EXPECT_EQ(daemon_.admin("DELETE", "/v1/functions/hello").status, 204);
  EXPECT_EQ(daemon_.admin("GET", "/v1/functions/hello").status, 404);
  EXPECT_EQ(daemon_.admin("DELETE", "/v1/functions/hello").status, 404);
  EXPECT_EQ(daemon_.admin("GET", "/v1/functions").json()["functions"].size(), 1u);
}

TEST_F(DeployE2E, AuthIsRequiredOnTcpButNotOnTheSocket) {
  auto none = http_request(daemon_.port(), "GET", "/v1/functions");
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.json()["error"]["code"], "unauthorized");
  EXPECT_EQ(none.header("www-authenticate"), "Bearer realm=\"ember\"");
  auto wrong = http_request(daemon_.port(), "GET", "/v1/functions", "",
                            {{"Authorization", "Bearer not-the-token-0123456789"}});
  EXPECT_EQ(wrong.status, 401);
  // An unauthenticated deploy is refused before its body is read.
  auto deploy = http_request(daemon_.port(), "PUT", "/v1/functions/x",
                             node_bundle(ArchiveKind::kZip, "x"), kZip);
  EXPECT_EQ(deploy.status, 401);
  EXPECT_EQ(daemon_.admin("GET", "/v1/functions/x").status, 404);

  auto over_socket = unix_request(daemon_.socket(), "PUT", "/v1/functions/sock",
                                  node_bundle(ArchiveKind::kZip, "x"), kZip);
  EXPECT_EQ(over_socket.status, 201) << over_socket.body;
  EXPECT_EQ(unix_request(daemon_.socket(), "GET", "/v1/functions/sock").status, 200);
  struct stat st {};
  ASSERT_EQ(::stat(daemon_.socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);

  EXPECT_EQ(http_request(daemon_.port(), "GET", "/healthz").status, 200);
  EXPECT_EQ(http_request(daemon_.port(), "GET", "/readyz").json()["status"], "ready");
}

TEST_F(DeployE2E, BadInputGetsClearErrors) {
  auto bad_name = daemon_.admin("PUT", "/v1/functions/Bad_Name", "x");
  EXPECT_EQ(bad_name.status, 400);
  EXPECT_EQ(bad_name.json()["error"]["code"], "bad_request");
  EXPECT_EQ(daemon_.admin("GET", "/v1/functions/%2e%2e").status, 400);
  EXPECT_EQ(daemon_.admin("GET", "/v1/functions/a%00b").status, 400);
  EXPECT_EQ(daemon_.admin("GET", "/v1/nothing").status, 404);
  EXPECT_EQ(daemon_.admin("POST", "/v1/functions/hello").status, 405);

  auto junk = daemon_.admin("PUT", "/v1/functions/junk", "this is not an archive");
  EXPECT_EQ(junk.status, 415) << junk.body;

  auto evil = ArchiveBuilder(ArchiveKind::kTarGz)
                  .file("function.json", R"({"runtime":"node","handler":"index.handler"})")
                  .file("index.js", "x")
                  .file("../../escape.js", "x")
                  .build();
  auto rejected = daemon_.admin("PUT", "/v1/functions/evil", evil, kTgz);
  EXPECT_EQ(rejected.status, 400);
  EXPECT_NE(rejected.json()["error"]["message"].get<std::string>().find("../../escape.js"),
            std::string::npos)
      << rejected.body;

  // A FIFO is refused alike in both formats, though libarchive would read the zip one as a file.
  auto fifo_zip = zip_with_unix_type(
      ArchiveBuilder(ArchiveKind::kZip)
          .file("function.json", R"({"runtime":"node","handler":"index.handler"})")
          .file("index.js", "x")
          .file("pipe", "")
          .build(),
      "pipe", S_IFIFO);
  auto fifo_tgz = ArchiveBuilder(ArchiveKind::kTarGz)
                      .file("function.json", R"({"runtime":"node","handler":"index.handler"})")
                      .file("index.js", "x")
                      .special("pipe", S_IFIFO)
                      .build();
  for (const auto& [bundle, type] : {std::pair{fifo_zip, kZip}, std::pair{fifo_tgz, kTgz}}) {
    auto fifo = daemon_.admin("PUT", "/v1/functions/fifo", bundle, type);
    EXPECT_EQ(fifo.status, 400) << fifo.body;
    EXPECT_EQ(fifo.json()["error"]["message"],
              "bundle entry \"pipe\": devices, FIFOs and sockets are not allowed in a bundle")
        << fifo.body;
  }
  EXPECT_EQ(daemon_.admin("GET", "/v1/functions/fifo").status, 404);

  auto bad_manifest = ArchiveBuilder(ArchiveKind::kZip)
                          .file("function.json", R"({"runtime":"node","handler":"index.handler",
                                                     "memory_mb": 99999})")
                          .file("index.js", "x")
                          .build();
  auto manifest = daemon_.admin("PUT", "/v1/functions/m", bad_manifest, kZip);
  EXPECT_EQ(manifest.status, 400);
  EXPECT_EQ(manifest.json()["error"]["field"], "memory_mb");

  auto bad_query =
      daemon_.admin("PUT", "/v1/functions/q?colour=red", node_bundle(ArchiveKind::kZip, "x"), kZip);
  EXPECT_EQ(bad_query.status, 400);
  EXPECT_EQ(bad_query.json()["error"]["field"], "colour");

  ASSERT_EQ(daemon_.admin("PUT", "/v1/functions/p", node_bundle(ArchiveKind::kZip, "x")).status,
            201);
  EXPECT_EQ(daemon_.admin("PATCH", "/v1/functions/p", "{bad json").status, 400);
  EXPECT_EQ(daemon_.admin("PATCH", "/v1/functions/p", R"({"memory_mb": 1})").status, 400);
  EXPECT_EQ(daemon_.admin("PATCH", "/v1/functions/p", "[1]").status, 400);

  EXPECT_EQ(daemon_.admin("GET", "/v1/functions").json()["functions"].size(), 1u)
      << "no rejected deploy may leave a function behind";
  EXPECT_TRUE(fs::is_empty(daemon_.state_dir() / "tmp"));
}

TEST_F(DeployE2E, MalformedRequestsAre400AndClosed) {
  bool closed = false;
  auto reply = raw_exchange(daemon_.port(), "GARBAGE\x01\x02 / HTTP/9\r\n\r\n", 5000, &closed);
  EXPECT_NE(reply.find("HTTP/1.1 400"), std::string::npos) << reply;
  EXPECT_NE(reply.find("\"error\""), std::string::npos);
  EXPECT_TRUE(closed);
  reply =
      raw_exchange(daemon_.port(), "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n",
                   5000, &closed);
  EXPECT_NE(reply.find("HTTP/1.1 400"), std::string::npos) << reply;
  EXPECT_TRUE(closed);
}

TEST_F(DeployE2E, KeepAliveServesSeveralRequestsOnOneConnection) {
  std::string two =
      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n"
      "Connection: close\r\n\r\n";
  bool closed = false;
  auto reply = raw_exchange(daemon_.port(), two, 5000, &closed);
  EXPECT_NE(reply.find("\"ok\""), std::string::npos) << reply;
  EXPECT_NE(reply.find("\"ready\""), std::string::npos) << reply;
  EXPECT_TRUE(closed);
}

TEST_F(DeployE2E, RestartServesEveryFunctionAsBefore) {
  ASSERT_EQ(daemon_.admin("PUT", "/v1/functions/a", node_bundle(ArchiveKind::kZip, "1")).status,
            201);
  ASSERT_EQ(daemon_.admin("PUT", "/v1/functions/a", node_bundle(ArchiveKind::kZip, "2")).status,
            200);
  ASSERT_EQ(daemon_.admin("POST", "/v1/functions/a/rollback?to=1").status, 200);
  ASSERT_EQ(daemon_.admin("PUT", "/v1/functions/b", node_bundle(ArchiveKind::kTarGz, "3")).status,
            201);
  auto before = daemon_.admin("GET", "/v1/functions").json();
  ASSERT_EQ(daemon_.stop(SIGTERM), 0) << "SIGTERM must drain and exit 0";
  ASSERT_TRUE(daemon_.start()) << daemon_.log();
  auto after = daemon_.admin("GET", "/v1/functions").json();
  EXPECT_EQ(before, after);
}

TEST(DeployE2ELimits, HeaderBodyConnectionAndSlowClientLimits) {
  TempDir tmp;
  write_text(tmp / "config.json", R"({
    "http": {"max_connections": 3, "max_header_bytes": 2048, "header_timeout_ms": 300},
    "bundles": {"max_compressed_bytes": 4096}
  })");
  Daemon daemon(tmp / "state", {"--config", (tmp / "config.json").string()});
  ASSERT_TRUE(daemon.start()) << daemon.log();

  // 431: a header over the limit.
  auto big_header = daemon.admin("GET", "/v1/functions", "", {{"X-Big", std::string(4096, 'a')}});
  EXPECT_EQ(big_header.status, 431);
  EXPECT_EQ(big_header.json()["error"]["code"], "header_too_large");

  // 413 from the Content-Length alone: the body is never sent.
  bool closed = false;
  std::string head = std::string(
                         "PUT /v1/functions/big HTTP/1.1\r\nHost: x\r\nAuthorization: "
                         "Bearer ") +
                     kTestToken + "\r\nContent-Length: 100000000\r\n\r\n";
  auto reply = raw_exchange(daemon.port(), head, 5000, &closed);
  EXPECT_NE(reply.find("HTTP/1.1 413"), std::string::npos) << reply;
  EXPECT_TRUE(closed);
  // 413 for a chunked body that grows past the limit.
  std::string chunked = std::string(
                            "PUT /v1/functions/big HTTP/1.1\r\nHost: x\r\nAuthorization: "
                            "Bearer ") +
                        kTestToken + "\r\nTransfer-Encoding: chunked\r\n\r\n2000\r\n" +
                        std::string(0x2000, 'z') + "\r\n0\r\n\r\n";
  reply = raw_exchange(daemon.port(), chunked, 5000, &closed);
  EXPECT_NE(reply.find("HTTP/1.1 413"), std::string::npos) << reply;

  // A client that sends half a header and stalls is disconnected by the header deadline.
  reply =
      raw_exchange(daemon.port(), "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", 5000, &closed);
  EXPECT_TRUE(closed) << "slow client was not disconnected";
  EXPECT_TRUE(reply.empty()) << reply;

  // Connection cap: three idle connections are held, the fourth is refused with 503.
  {
    boost::asio::io_context io;
    std::vector<boost::asio::ip::tcp::socket> held;
    for (int i = 0; i < 3; ++i) {
      held.emplace_back(io);
      held.back().connect({boost::asio::ip::make_address("127.0.0.1"), daemon.port()});
    }
    // The server registers a connection when it accepts it; one request on each proves that.
    for (auto& s : held) {
      std::string req = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
      boost::asio::write(s, boost::asio::buffer(req));
      char buf[512];
      s.read_some(boost::asio::buffer(buf));
    }
    auto refused = raw_exchange(daemon.port(), "", 5000, &closed);
    EXPECT_NE(refused.find("HTTP/1.1 503"), std::string::npos) << refused;
    EXPECT_NE(refused.find("overloaded"), std::string::npos);
  }
  // Once they close, new connections are served again.
  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {
    served = http_request(daemon.port(), "GET", "/healthz").status == 200;
  }
  EXPECT_TRUE(served);
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

TEST(DeployE2EToken, GeneratedTokenIsPrivateAndNeverLogged) {
  TempDir tmp;
  Daemon daemon(tmp / "state", {}, /*with_token=*/false);
  ASSERT_TRUE(daemon.start()) << daemon.log();
  fs::path token_file = tmp / "state" / "admin.token";
  struct stat st {};
  ASSERT_EQ(::stat(token_file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::string token = read_text(token_file);
  while (!token.empty() && token.back() == '\n') token.pop_back();
  EXPECT_EQ(token.size(), 64u);
  EXPECT_NE(daemon.log().find(token_file.string()), std::string::npos);
  EXPECT_EQ(daemon.log().find(token), std::string::npos) << "the token value was logged";
  auto ok = http_request(daemon.port(), "GET", "/v1/functions", "",
                         {{"Authorization", "Bearer " + token}});
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
  // Restarting keeps the same token.
  ASSERT_TRUE(daemon.start());
  EXPECT_EQ(http_request(daemon.port(), "GET", "/v1/functions", "",
                         {{"Authorization", "Bearer " + token}})
                .status,
            200);
}

TEST(DeployE2EStartup, DeployFlagIsIdempotentAcrossRestarts) {
  TempDir tmp;
  write_text(tmp / "fns" / "hello" / "function.json",
             R"({"runtime":"node","handler":"index.handler"})");
  write_text(tmp / "fns" / "hello" / "index.js", "function handler(event) { return 1; }\n");
  write_text(tmp / "fns" / "notes" / "README", "no function.json: skipped");
  Daemon daemon(tmp / "state", {"--deploy", (tmp / "fns").string()});
  ASSERT_TRUE(daemon.start()) << daemon.log();
  auto first = daemon.admin("GET", "/v1/functions/hello");
  ASSERT_EQ(first.status, 200);
  EXPECT_EQ(daemon.admin("GET", "/v1/functions").json()["functions"].size(), 1u);
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
  ASSERT_TRUE(daemon.start());
  EXPECT_EQ(daemon.admin("GET", "/v1/functions/hello").json()["active_version"], 1);
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
  write_text(tmp / "fns" / "hello" / "index.js", "function handler(event) { return 2; }\n");
  ASSERT_TRUE(daemon.start());
  EXPECT_EQ(daemon.admin("GET", "/v1/functions/hello").json()["active_version"], 2);
}

TEST(DeployE2EStartup, SigtermRightAfterStartIsAStillCleanExit) {
  // A stop request that lands while the daemon is still wiring itself up must drain, not kill.
  TempDir tmp;
  Daemon daemon(tmp / "state");
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(daemon.start()) << daemon.log();
    EXPECT_EQ(daemon.stop(SIGTERM), 0) << "round " << i << "\n" << daemon.log();
  }
}

TEST(DeployE2EStartup, BadConfigurationIsRefusedWithTheFieldPath) {
  TempDir tmp;
  write_text(tmp / "bad.json", R"({"http": {"max_connections": -1}})");
  auto r = run_emberd({"--config", (tmp / "bad.json").string(), "--check-config"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("http.max_connections"), std::string::npos) << r.output;
  write_text(tmp / "good.json", R"({"listen": "127.0.0.1:0"})");
  r = run_emberd({"--config", (tmp / "good.json").string(), "--check-config"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = run_emberd({"--bogus"});
  EXPECT_EQ(r.exit_code, 2);
  r = run_emberd({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("--state-dir"), std::string::npos);
}

TEST(DeployE2EStartup, ASecondDaemonOnTheSameSocketIsRefused) {
  TempDir tmp;
  Daemon first(tmp / "state");
  ASSERT_TRUE(first.start());
  auto r = run_emberd({"--listen", "127.0.0.1:0", "--state-dir", (tmp / "state2").string(),
                       "--socket", first.socket().string(), "--admin-token", kTestToken});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("already serves"), std::string::npos) << r.output;
  EXPECT_EQ(unix_request(first.socket(), "GET", "/v1/functions").status, 200);
}

}  // namespace
}  // namespace ember::testing
