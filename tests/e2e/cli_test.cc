// The `ember` command line against the real emberd, as a user types it: deploy a folder, list,
// invoke, read and follow the log, roll back, keys, the key-value store, usage, and the exit
// codes and messages a script relies on. Most commands run through ember::cli::run in this
// process (its output captured); a few run the installed-to-be binary, to check its wiring.
#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <fstream>
#include <future>
#include <map>
#include <random>
#include <sstream>

#include "bundle.h"
#include "client.h"
#include "commands.h"
#include "daemon_test.h"
#include "eventually.h"

namespace ember::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

struct Ran {
  int code = -1;
  std::string out;
  std::string err;
};

// An output that takes text until it has seen `needle`, then fails, as a closed pipe does.
class StopAfter : public std::streambuf {
 public:
  StopAfter(std::ostream& copy, std::string needle) : copy_(copy), needle_(std::move(needle)) {}

 protected:
  int_type overflow(int_type c) override {
    if (c == traits_type::eof()) return traits_type::not_eof(c);
    char ch = traits_type::to_char_type(c);
    return xsputn(&ch, 1) == 1 ? c : traits_type::eof();
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (done_) return 0;
    copy_.write(s, n);
    text_.append(s, static_cast<size_t>(n));
    if (text_.find(needle_) != std::string::npos && text_.back() == '\n') done_ = true;
    return n;
  }
  int sync() override { return done_ ? -1 : 0; }

 private:
  std::ostream& copy_;
  std::string needle_;
  std::string text_;
  bool done_ = false;
};

class CliE2E : public DaemonTest {
 protected:
  void SetUp() override {
    DaemonTest::SetUp();
    if (HasFatalFailure()) return;
    std::filesystem::create_directories(tmp_ / "hello");
    write_text(tmp_ / "hello" / "index.js",
               "exports.handler = async (event) => {\n"
               "  console.log('called with', JSON.stringify(event));\n"
               "  if (event.fail) throw new Error('asked to fail');\n"
               "  return { hello: event.name || 'world', v: process.env.V || '1' };\n"
               "};\n");
    write_text(tmp_ / "hello" / "function.json",
               R"({"runtime": "node", "handler": "index.handler"})");
  }
  // `ember ARGS...` over the Unix socket (no token), unless `env` names EMBER_URL.
  Ran ember(std::vector<std::string> args, std::map<std::string, std::string> env = {},
            bool tty = false) {
    if (!env.count("EMBER_URL")) env.emplace("EMBER_SOCKET", daemon_.socket().string());
    cli::Environment e;
    e.get = [env](const std::string& name) -> std::optional<std::string> {
      auto it = env.find(name);
      if (it == env.end()) return std::nullopt;
      return it->second;
    };
    e.stderr_is_tty = tty;
    std::ostringstream out, err;
    Ran r;
    r.code = cli::run(args, e, out, err);
    r.out = out.str();
    r.err = err.str();
    return r;
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(daemon_.port()); }
};

TEST_F(CliE2E, DeploysAFolderListsItAndInvokesIt) {
  Ran d = ember({"deploy", (tmp_ / "hello").string()});
  ASSERT_EQ(d.code, 0) << d.err;
  EXPECT_NE(d.out.find("hello: version 1 deployed, new function (node, index.handler"),
            std::string::npos)
      << d.out;
  // The same folder again is the same bundle: no new version.
  Ran again = ember({"deploy", (tmp_ / "hello").string(), "--json"});
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(json::parse(again.out)["active_version"], 1) << again.out;

  Ran ls = ember({"ls"});
  ASSERT_EQ(ls.code, 0) << ls.err;
  EXPECT_EQ(ls.out.rfind("NAME", 0), 0u) << ls.out;
  EXPECT_NE(ls.out.find("\nhello  "), std::string::npos) << ls.out;
  EXPECT_NE(ls.out.find("index.handler"), std::string::npos) << ls.out;
  Ran names = ember({"ls", "--json"});
  ASSERT_EQ(names.code, 0);
  EXPECT_EQ(json::parse(names.out)["functions"][0]["name"], "hello");

  Ran inv = ember({"invoke", "hello", "--data", R"({"name":"cli"})"});
  ASSERT_EQ(inv.code, 0) << inv.err;
  EXPECT_EQ(json::parse(inv.out), json::parse(R"({"hello":"cli","v":"1"})"));
  Ran jinv = ember({"--json", "invoke", "hello"});
  ASSERT_EQ(jinv.code, 0) << jinv.err;
  json j = json::parse(jinv.out);
  EXPECT_EQ(j["status"], 200);
  EXPECT_EQ(j["body"]["hello"], "world");
  EXPECT_EQ(j["headers"]["x-ember-start"], "warm");
  EXPECT_FALSE(j["headers"]["x-ember-request-id"].get<std::string>().empty());

  // --async sends an event and prints its id, which emberd then runs.
  Ran queued = ember({"invoke", "hello", "--async", "--data", R"({"name":"later"})"});
  ASSERT_EQ(queued.code, 0) << queued.err;
  const std::string id = queued.out.substr(0, queued.out.find('\n'));
  ASSERT_FALSE(id.empty()) << queued.out;
  EXPECT_EQ(daemon_.wait_for_invocation(id, "succeeded")["result"]["hello"], "later");

  // Data from a file.
  write_text(tmp_ / "event.json", R"({"name":"from-file"})");
  Ran file = ember({"invoke", "hello", "-d", "@" + (tmp_ / "event.json").string()});
  ASSERT_EQ(file.code, 0) << file.err;
  EXPECT_EQ(json::parse(file.out)["hello"], "from-file");
}

TEST_F(CliE2E, SettingsVersionsAndRollback) {
  ASSERT_EQ(ember({"deploy", (tmp_ / "hello").string(), "--name", "greeter"}).code, 0);
  Ran second = ember({"deploy", (tmp_ / "hello").string(), "--name", "greeter", "--set",
                      "memory_mb=256", "--set", "timeout_ms=5000"});
  ASSERT_EQ(second.code, 0) << second.err;
  EXPECT_NE(second.out.find("greeter: version 2 active"), std::string::npos) << second.out;
  Ran get = ember({"get", "greeter"});
  ASSERT_EQ(get.code, 0) << get.err;
  EXPECT_NE(get.out.find("memory_mb       256"), std::string::npos) << get.out;
  EXPECT_NE(get.out.find("VERSION  CREATED"), std::string::npos) << get.out;
  Ran back = ember({"rollback", "greeter", "1"});
  ASSERT_EQ(back.code, 0) << back.err;
  EXPECT_EQ(back.out, "greeter: version 1 active\n");
  Ran json_get = ember({"get", "greeter", "--json"});
  ASSERT_EQ(json_get.code, 0);
  EXPECT_EQ(json::parse(json_get.out)["config"]["memory_mb"], 128);

  Ran bad = ember({"deploy", (tmp_ / "hello").string(), "--set", "memory_mb=1"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("ember: bad_request: memory_mb"), std::string::npos) << bad.err;
}

TEST_F(CliE2E, ExitCodesAndMessagesAScriptReliesOn) {
  ASSERT_EQ(ember({"deploy", (tmp_ / "hello").string()}).code, 0);
  Ran failed = ember({"invoke", "hello", "--data", R"({"fail":true})"});
  EXPECT_EQ(failed.code, cli::kFunctionFailed);
  EXPECT_NE(failed.out.find("asked to fail"), std::string::npos) << failed.out;
  EXPECT_NE(failed.err.find("the function failed (Unhandled, HTTP 500)"), std::string::npos)
      << failed.err;

  Ran missing = ember({"invoke", "nope"});
  EXPECT_EQ(missing.code, cli::kApiError);
  EXPECT_EQ(missing.err, "ember: not_found: function nope does not exist\n");
  EXPECT_TRUE(missing.out.empty());

  Ran usage = ember({"invoke"});
  EXPECT_EQ(usage.code, cli::kUsage);
  EXPECT_NE(usage.err.find("invoke takes one function NAME"), std::string::npos);
  EXPECT_EQ(ember({"frobnicate"}).code, cli::kUsage);
  EXPECT_EQ(ember({"ls", "--colour"}).code, cli::kUsage);
  Ran nothing = ember({"deploy", (tmp_ / "absent").string()});
  EXPECT_EQ(nothing.code, cli::kUsage);
  EXPECT_NE(nothing.err.find("absent"), std::string::npos) << nothing.err;

  Ran unreachable = ember({"ls"}, {{"EMBER_SOCKET", (tmp_ / "no.sock").string()}});
  EXPECT_EQ(unreachable.code, cli::kUnreachable);
  EXPECT_NE(unreachable.err.find("cannot connect to emberd at"), std::string::npos);

  // Over TCP the admin token is needed, and a wrong one is refused.
  Ran no_token = ember({"ls"}, {{"EMBER_URL", url()}, {"EMBER_TOKEN", "wrong"}});
  EXPECT_EQ(no_token.code, cli::kApiError);
  EXPECT_NE(no_token.err.find("unauthorized"), std::string::npos) << no_token.err;
  Ran with_token = ember({"ls"}, {{"EMBER_URL", url()}, {"EMBER_TOKEN", kTestToken}});
  EXPECT_EQ(with_token.code, 0) << with_token.err;
  Ran flag_token = ember({"--url", url(), "--token", kTestToken, "get", "hello"});
  EXPECT_EQ(flag_token.code, 0) << flag_token.err;
  EXPECT_EQ(ember({"--url", "https://example.com", "ls"}).code, cli::kUsage);

  Ran help = ember({"deploy", "--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_EQ(help.out.rfind("usage: ember", 0), 0u) << help.out;

  Ran rm = ember({"rm", "hello"});
  ASSERT_EQ(rm.code, 0) << rm.err;
  EXPECT_EQ(rm.out, "hello: removed\n");
  EXPECT_EQ(ember({"get", "hello"}).code, cli::kApiError);
  ASSERT_EQ(ember({"deploy", (tmp_ / "hello").string(), "--name", "again"}).code, 0);
  Ran json_rm = ember({"rm", "again", "--json"});
  ASSERT_EQ(json_rm.code, 0) << json_rm.err;
  EXPECT_TRUE(json::parse(json_rm.out, nullptr, false).is_object()) << json_rm.out;
}

TEST_F(CliE2E, ACallThatTimesOutIsAFunctionFailure) {
  write_text(tmp_ / "hello" / "index.js",
             "exports.handler = () => new Promise((done) => setTimeout(done, 5000));\n");
  ASSERT_EQ(ember({"deploy", (tmp_ / "hello").string(), "--set", "timeout_ms=200"}).code, 0);
  Ran slow = ember({"invoke", "hello"});
  EXPECT_EQ(slow.code, cli::kFunctionFailed) << slow.out << slow.err;
  EXPECT_NE(slow.err.find("HTTP 504"), std::string::npos) << slow.err;
}

TEST_F(CliE2E, LogsAreReadAndFollowed) {
  ASSERT_EQ(ember({"deploy", (tmp_ / "hello").string()}).code, 0);
  ASSERT_EQ(ember({"invoke", "hello", "--data", R"({"name":"first"})"}).code, 0);
  Ran logs = ember({"logs", "hello"});
  ASSERT_EQ(logs.code, 0) << logs.err;
  EXPECT_NE(logs.out.find(" ember  "), std::string::npos) << logs.out;
  EXPECT_NE(logs.out.find("START RequestId: "), std::string::npos) << logs.out;
  EXPECT_NE(logs.out.find("called with {\"name\":\"first\"}"), std::string::npos) << logs.out;
  Ran page = ember({"logs", "hello", "--json", "--limit", "1"});
  ASSERT_EQ(page.code, 0);
  EXPECT_EQ(json::parse(page.out)["lines"].size(), 1u);
  const json all = json::parse(ember({"logs", "hello", "--json"}).out);
  const std::string next = all["next"].dump();

  // --limit N: the last N lines.
  Ran last = ember({"logs", "hello", "--limit", "1"});
  ASSERT_EQ(last.code, 0) << last.err;
  EXPECT_EQ(std::count(last.out.begin(), last.out.end(), '\n'), 1) << last.out;
  EXPECT_NE(last.out.find("REPORT RequestId: "), std::string::npos) << last.out;

  // -f prints the lines from `next` on as they come; the reader stops it once it has seen the
  // line it waits for (its output then fails, as when `ember logs -f | head` ends), or when the
  // daemon stops, which ends the stream.
  std::ostringstream seen_out;
  StopAfter stop(seen_out, "greeting-second");
  std::ostream followed_out(&stop);
  auto followed = std::async(std::launch::async, [&] {
    std::ostringstream err;
    cli::Environment e;
    const std::string socket = daemon_.socket().string();
    e.get = [socket](const std::string& name) -> std::optional<std::string> {
      if (name == "EMBER_SOCKET") return socket;
      return std::nullopt;
    };
    return cli::run({"logs", "hello", "-f", "--since", next}, e, followed_out, err);
  });
  EXPECT_EQ(ember({"invoke", "hello", "--data", R"({"name":"greeting-second"})"}).code, 0);
  const bool stopped = followed.wait_for(20s) == std::future_status::ready;
  if (!stopped) daemon_.stop(SIGTERM);  // ends the stream, so that the follower returns
  const int code = followed.get();      // the follower is done with seen_out from here on
  const std::string seen = seen_out.str();
  EXPECT_TRUE(stopped) << "ember logs -f did not print the new line: " << seen;
  EXPECT_EQ(code, 0);
  EXPECT_NE(seen.find("stdout"), std::string::npos) << seen;
  EXPECT_NE(seen.find("called with {\"name\":\"greeting-second\"}"), std::string::npos) << seen;
  EXPECT_EQ(seen.find("\"first\""), std::string::npos) << "only lines from `next` on: " << seen;
}

TEST_F(CliE2E, KeysKvAndUsage) {
  ASSERT_EQ(ember({"deploy", (tmp_ / "hello").string(), "--set", "auth=token"}).code, 0);
  Ran created = ember({"keys", "hello", "create"});
  ASSERT_EQ(created.code, 0) << created.err;
  const std::string token = created.out.substr(0, created.out.find('\n'));
  ASSERT_EQ(token.rfind("EMBK", 0), 0u) << created.out;
  const std::string id = token.substr(0, token.find('.'));
  // The key opens the function over TCP.
  auto opened = http_request(daemon_.port(), "POST", "/v1/functions/hello/invoke", "{}",
                             {{"Authorization", "Bearer " + token}});
  EXPECT_EQ(opened.status, 200) << opened.body;
  Ran listed = ember({"keys", "hello"});
  ASSERT_EQ(listed.code, 0);
  EXPECT_NE(listed.out.find(id), std::string::npos) << listed.out;
  Ran revoked = ember({"keys", "hello", "rm", id});
  ASSERT_EQ(revoked.code, 0) << revoked.err;
  auto refused = http_request(daemon_.port(), "POST", "/v1/functions/hello/invoke", "{}",
                              {{"Authorization", "Bearer " + token}});
  EXPECT_EQ(refused.status, 401);

  ASSERT_EQ(ember({"kv", "put", "app", "user/1", R"({"theme":"dark"})"}).code, 0);
  Ran negative = ember({"kv", "put", "app", "n", "-1"});  // a value, not an option
  ASSERT_EQ(negative.code, 0) << negative.err;
  EXPECT_EQ(ember({"kv", "get", "app", "n"}).out, "-1\n");
  ASSERT_EQ(ember({"kv", "rm", "app", "n"}).code, 0);
  Ran text = ember({"kv", "put", "app", "note", "plain words", "--ttl", "3600"});
  ASSERT_EQ(text.code, 0) << text.err;
  Ran got = ember({"kv", "get", "app", "user/1", "--json"});
  ASSERT_EQ(got.code, 0);
  EXPECT_EQ(json::parse(got.out)["value"]["theme"], "dark");
  EXPECT_EQ(json::parse(ember({"kv", "get", "app", "note"}).out), "plain words");
  Ran kls = ember({"kv", "ls", "app", "--prefix", "user/"});
  ASSERT_EQ(kls.code, 0);
  EXPECT_NE(kls.out.find("user/1"), std::string::npos);
  EXPECT_EQ(kls.out.find("note"), std::string::npos) << kls.out;
  EXPECT_EQ(ember({"kv", "rm", "app", "note"}).out, "note: deleted\n");
  Ran gone = ember({"kv", "get", "app", "note"});
  EXPECT_EQ(gone.code, cli::kApiError);
  EXPECT_NE(gone.err.find("KvKeyNotFound"), std::string::npos) << gone.err;

  // The call made with the key was metered.
  ASSERT_TRUE(eventually([&] {
    Ran u = ember({"usage", "--json", "--function", "hello"});
    json j = json::parse(u.out, nullptr, false);
    return u.code == 0 && j.is_object() && j["total"].value("invocations", 0) == 1;
  })) << ember({"usage", "--json"}).out;
  Ran table = ember({"usage"});
  EXPECT_NE(table.out.find("FUNCTION  CALLS"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("\nhello     1 "), std::string::npos) << table.out;
}

TEST_F(CliE2E, ALargeFolderUploadsWithProgressOnATerminal) {
  // 3 MiB that gzip cannot shrink.
  std::string noise(3 << 20, '\0');
  std::mt19937 rng(7);
  for (char& c : noise) c = static_cast<char>(rng());
  { std::ofstream(tmp_ / "hello" / "blob.bin", std::ios::binary) << noise; }
  Ran quiet = ember({"deploy", (tmp_ / "hello").string(), "--name", "big"});
  ASSERT_EQ(quiet.code, 0) << quiet.err;
  EXPECT_EQ(quiet.err, "");  // not a terminal: no progress
  std::filesystem::remove(tmp_ / "hello" / "blob.bin");
  noise[0] ^= 1;
  { std::ofstream(tmp_ / "hello" / "blob2.bin", std::ios::binary) << noise; }
  Ran shown = ember({"deploy", (tmp_ / "hello").string(), "--name", "big"}, {}, /*tty=*/true);
  ASSERT_EQ(shown.code, 0) << shown.err;
  EXPECT_NE(shown.err.find("uploading"), std::string::npos) << shown.err;
  EXPECT_NE(shown.err.find("(100%)\n"), std::string::npos) << shown.err;
  EXPECT_EQ(json::parse(ember({"get", "big", "--json"}).out)["active_version"], 2);
}

TEST_F(CliE2E, TheBinaryReadsItsEnvironmentAndExitsWithTheCode) {
  ASSERT_EQ(ember({"deploy", (tmp_ / "hello").string()}).code, 0);
  auto run_binary = [&](const std::string& args) {
    const std::string command = "EMBER_SOCKET='" + daemon_.socket().string() + "' " +
                                EMBER_CLI_BINARY + " " + args + " 2>&1";
    FILE* p = ::popen(command.c_str(), "r");
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    int status = ::pclose(p);
    return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, out);
  };
  auto [ok, out] = run_binary("invoke hello --data '{\"name\":\"bin\"}'");
  EXPECT_EQ(ok, 0) << out;
  EXPECT_NE(out.find("\"hello\":\"bin\""), std::string::npos) << out;
  auto [missing, why] = run_binary("get nope");
  EXPECT_EQ(missing, 1) << why;
  auto [bad, usage] = run_binary("--bogus");
  EXPECT_EQ(bad, 2) << usage;
  auto [completion, script] = run_binary("completion bash");
  EXPECT_EQ(completion, 0);
  EXPECT_NE(script.find("complete -F _ember ember"), std::string::npos);
  // The script is valid bash.
  write_text(tmp_ / "completion.bash", script);
  EXPECT_EQ(std::system(("bash -n " + (tmp_ / "completion.bash").string()).c_str()), 0);
}

// Each entry's path and mode.
std::map<std::string, unsigned> list_archive(const std::string& bytes) {
  std::map<std::string, unsigned> out;
  archive* a = archive_read_new();
  archive_read_support_filter_all(a);
  archive_read_support_format_all(a);
  if (archive_read_open_memory(a, bytes.data(), bytes.size()) == ARCHIVE_OK) {
    archive_entry* e = nullptr;
    while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
      out[archive_entry_pathname(e)] = archive_entry_mode(e);
      archive_read_data_skip(a);
    }
  }
  archive_read_free(a);
  return out;
}

TEST(CliBundle, AFolderIsPackedWithItsModesAndWithoutGit) {
  TempDir tmp;
  std::filesystem::create_directories(tmp / "f" / "lib");
  std::filesystem::create_directories(tmp / "f" / ".git");
  write_text(tmp / "f" / "index.js", "exports.handler = async () => 1;\n");
  write_text(tmp / "f" / "lib" / "run.sh", "#!/bin/sh\n");
  std::filesystem::permissions(tmp / "f" / "lib", std::filesystem::perms(0755));
  std::filesystem::permissions(tmp / "f" / "lib" / "run.sh", std::filesystem::perms(0755));
  write_text(tmp / "f" / ".git" / "HEAD", "ref\n");
  auto packed = cli::read_bundle((tmp / "f").string());
  ASSERT_TRUE(packed.ok()) << packed.error().message;
  auto listed = list_archive(*packed);
  EXPECT_EQ(listed, (std::map<std::string, unsigned>{
                        {"index.js", 0100644}, {"lib/", 040755}, {"lib/run.sh", 0100755}}));
  // The same contents give the same bytes: no time in the gzip header (bytes 4-7, RFC 1952)
  // nor in the entries.
  ASSERT_GT(packed->size(), 8u);
  EXPECT_EQ(packed->substr(4, 4), std::string(4, '\0'));
  std::filesystem::last_write_time(tmp / "f" / "index.js",
                                   std::filesystem::file_time_type::clock::now() - 1h);
  EXPECT_EQ(*packed, *cli::read_bundle((tmp / "f").string()));
  EXPECT_FALSE(cli::read_bundle((tmp / "none").string()).ok());
}

TEST(CliUrl, OnlyPlainHttpWithAHostAndAPort) {
  cli::Endpoint e;
  ASSERT_TRUE(cli::parse_url("http://127.0.0.1:8080", e).ok());
  EXPECT_EQ(e.host, "127.0.0.1");
  EXPECT_EQ(e.port, "8080");
  ASSERT_TRUE(cli::parse_url("http://ember.internal/", e).ok());
  EXPECT_EQ(e.port, "80");
  ASSERT_TRUE(cli::parse_url("http://[::1]:9000", e).ok());
  EXPECT_EQ(e.host, "::1");
  EXPECT_FALSE(cli::parse_url("https://x", e).ok());
  EXPECT_FALSE(cli::parse_url("http://x/v1", e).ok());
  EXPECT_FALSE(cli::parse_url("http://x:port", e).ok());
  EXPECT_FALSE(cli::parse_url("http://:80", e).ok());
}

}  // namespace
}  // namespace ember::testing
