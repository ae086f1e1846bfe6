// HTTP/1.1 framing against the real emberd over raw sockets: every malformed or ambiguous
// request is answered with its status and the connection closed, and no function runs, so no
// request can be smuggled past a proxy that reads the bytes differently (RFC 9112 §6-7).
#include <gtest/gtest.h>
#include <unistd.h>

#include <regex>
#include <sstream>

#include "archive_builder.h"
#include "daemon.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

// A request that a proxy could read as two: the second one would run the function.
const std::string kSmuggled = "GET /fn/echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

struct Case {
  const char* name;
  std::string bytes;
  int status;
};

std::string post(const std::string& headers, const std::string& body = "") {
  return "POST /v1/functions/echo/invoke HTTP/1.1\r\nHost: x\r\n" + headers + "\r\n" + body;
}

std::vector<Case> malformed() {
  const std::string chunked = "Transfer-Encoding: chunked\r\n";
  return {
      // Transfer-Encoding whose final coding is not chunked, or ambiguous with Content-Length.
      {"te_gzip", post("Transfer-Encoding: gzip\r\n", kSmuggled), 400},
      {"te_identity", post("Transfer-Encoding: identity\r\n", kSmuggled), 400},
      {"te_chunked_then_gzip", post("Transfer-Encoding: chunked, gzip\r\n", kSmuggled), 400},
      {"te_lines_end_in_gzip",
       post("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", kSmuggled), 400},
      {"te_chunked_twice_in_list", post("Transfer-Encoding: chunked, chunked\r\n", kSmuggled), 400},
      {"te_chunked_twice_in_lines", post(chunked + chunked, "0\r\n\r\n" + kSmuggled), 400},
      {"te_empty", post("Transfer-Encoding: \r\n", kSmuggled), 400},
      {"te_xchunked", post("Transfer-Encoding: xchunked\r\n", kSmuggled), 400},
      {"te_chunked_with_parameter", post("Transfer-Encoding: chunked;x=1\r\n", kSmuggled), 400},
      {"te_unknown_coding_before_chunked",
       post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"), 501},
      {"te_and_content_length", post(chunked + "Content-Length: 5\r\n", "0\r\n\r\n" + kSmuggled),
       400},
      {"content_length_and_te", post("Content-Length: 5\r\n" + chunked, "0\r\n\r\n" + kSmuggled),
       400},
      {"content_length_and_te_gzip",
       post("Content-Length: 2\r\nTransfer-Encoding: gzip\r\n", "{}" + kSmuggled), 400},
      {"te_in_http10",
       "POST /v1/functions/echo/invoke HTTP/1.0\r\nHost: x\r\n" + chunked + "\r\n0\r\n\r\n", 400},
      {"space_before_colon", post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n" + kSmuggled), 400},
      {"tab_before_colon", post("Content-Length\t: 2\r\n", "{}"), 400},
      {"whitespace_before_first_field",
       "POST /v1/functions/echo/invoke HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: x\r\n\r\n",
       400},
      // Content-Length that cannot be trusted.
      {"content_length_differs_in_list", post("Content-Length: 2, 3\r\n", "{}"), 400},
      {"content_length_differs_in_lines", post("Content-Length: 2\r\nContent-Length: 3\r\n", "{}"),
       400},
      {"content_length_negative", post("Content-Length: -1\r\n", "{}"), 400},
      {"content_length_hex", post("Content-Length: 0x2\r\n", "{}"), 400},
      {"content_length_plus", post("Content-Length: +2\r\n", "{}"), 400},
      {"content_length_two_numbers", post("Content-Length: 1 1\r\n", "{}"), 400},
      {"content_length_overflow", post("Content-Length: 184467440737095516160\r\n", "{}"), 400},
      {"content_length_empty", post("Content-Length: \r\n", "{}"), 400},
      // Malformed chunks, extensions and trailers.
      {"chunk_size_not_hex", post(chunked, "zz\r\n{}\r\n0\r\n\r\n"), 400},
      {"chunk_longer_than_size", post(chunked, "1\r\n{}\r\n0\r\n\r\n"), 400},
      {"chunk_size_overflow", post(chunked, "fffffffffffffffffffff\r\n{}\r\n0\r\n\r\n"), 400},
      {"chunk_size_negative", post(chunked, "-2\r\n{}\r\n0\r\n\r\n"), 400},
      {"chunk_size_lf_only", post(chunked, "2\n{}\r\n0\r\n\r\n"), 400},
      {"chunk_extension_malformed", post(chunked, "2;=\r\n{}\r\n0\r\n\r\n"), 400},
      {"chunk_extension_quote_past_line_end", post(chunked, "2;a=\"x\r\n{}\"\r\n0\r\n\r\n"), 400},
      {"trailer_bad_name", post(chunked, "2\r\n{}\r\n0\r\nBad Trailer: 1\r\n\r\n"), 400},
      {"trailer_content_length", post(chunked, "2\r\n{}\r\n0\r\nContent-Length: 9\r\n\r\n"), 400},
      // Line endings and folding.
      {"obs_fold", post("X-Note: a\r\n b\r\nContent-Length: 2\r\n", "{}"), 400},
      {"obs_fold_tab", post("X-Note: a\r\n\tb\r\nContent-Length: 2\r\n", "{}"), 400},
      {"bare_cr_in_value", post("X-Note: a\rb\r\nContent-Length: 2\r\n", "{}"), 400},
      {"bare_lf_line_ending", "GET /fn/echo/a HTTP/1.1\nHost: x\n\n", 400},
      {"bare_lf_between_fields", post("X-Note: a\nContent-Length: 2\r\n", "{}"), 400},
      {"nul_in_value", post(std::string("X-Note: a\0b\r\n", 13) + "Content-Length: 2\r\n", "{}"),
       400},
      // Bad request lines and hosts.
      {"space_in_target", "GET /fn/echo/a b HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"extra_word_after_version", "GET /fn/echo/a HTTP/1.1 x\r\nHost: x\r\n\r\n", 400},
      {"bad_protocol_name", "GET /fn/echo/a HTTX/1.1\r\nHost: x\r\n\r\n", 400},
      {"missing_target", "GET HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"http2_version", "GET /fn/echo/a HTTP/2.0\r\nHost: x\r\n\r\n", 400},
      {"http09_version", "GET /fn/echo/a HTTP/0.9\r\nHost: x\r\n\r\n", 400},
      {"no_host_in_http11", "GET /fn/echo/a HTTP/1.1\r\n\r\n", 400},
      {"two_hosts", "GET /fn/echo/a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400},
  };
}

// The status of each response in `reply`, in order.
std::vector<int> statuses(const std::string& reply) {
  static const std::regex kStatusLine(R"(HTTP/1\.[01] (\d{3}) )");
  std::vector<int> out;
  for (auto it = std::sregex_iterator(reply.begin(), reply.end(), kStatusLine);
       it != std::sregex_iterator(); ++it) {
    out.push_back(std::stoi((*it)[1]));
  }
  return out;
}

class FramingE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/usr/bin/node", X_OK) != 0) GTEST_SKIP() << "node is not installed";
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
    ArchiveBuilder b(ArchiveKind::kZip);
    b.file("function.json", R"({"runtime":"node","handler":"index.handler"})");
    b.file("index.js", "exports.handler = async (event) => event;\n");
    ASSERT_EQ(daemon_.admin("PUT", "/v1/functions/echo", b.build()).status, 201);
  }

  // Every call any function has answered, from /metrics.
  double invocations() {
    auto metrics = http_request(daemon_.port(), "GET", "/metrics");
    std::istringstream lines(metrics.body);
    double total = 0;
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("ember_invocations_total{", 0) == 0) {
        total += std::stod(line.substr(line.rfind(' ') + 1));
      }
    }
    return total;
  }

  TempDir tmp_;
  Daemon daemon_{tmp_ / "state"};
};

TEST_F(FramingE2E, MalformedAndAmbiguousRequestsAreRefusedClosedAndRunNothing) {
  const auto cases = malformed();
  ASSERT_GE(cases.size(), 30u);
  const double before = invocations();
  for (const auto& c : cases) {
    bool closed = false;
    const std::string reply = raw_exchange(daemon_.port(), c.bytes, 5000, &closed);
    const auto got = statuses(reply);
    ASSERT_EQ(got.size(), 1u) << c.name << ": expected one answer, got\n" << reply;
    EXPECT_EQ(got[0], c.status) << c.name << ":\n" << reply;
    EXPECT_NE(reply.find("{\"error\":{\"code\":"), std::string::npos) << c.name << ":\n" << reply;
    EXPECT_NE(reply.find("Connection: close"), std::string::npos) << c.name << ":\n" << reply;
    EXPECT_TRUE(closed) << c.name << ": the connection stayed open";
  }
  EXPECT_EQ(invocations(), before) << "a refused request ran a function";
  // The daemon is still serving, and the function still works.
  auto ok = http_request(daemon_.port(), "POST", "/v1/functions/echo/invoke", R"({"a":1})");
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(invocations(), before + 1);
}

TEST_F(FramingE2E, WellFormedKeepAliveAndPipelinedRequestsStillWork) {
  const double before = invocations();
  // Three requests in one write: Content-Length, chunked (with an extension and a trailer), and
  // a GET that closes; an empty line before a request line is ignored.
  const std::string pipelined =
      post("Content-Length: 7\r\n", R"({"n":1})") +
      post("Transfer-Encoding: chunked\r\n",
           "3;ext=\"a b\"\r\n{\"n\r\n4\r\n\":2}\r\n0\r\nX-T: 1\r\n\r\n") +
      "\r\nGET /fn/echo/three?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  bool closed = false;
  const std::string reply = raw_exchange(daemon_.port(), pipelined, 10000, &closed);
  EXPECT_EQ(statuses(reply), (std::vector<int>{200, 200, 200})) << reply;
  EXPECT_NE(reply.find(R"({"n":1})"), std::string::npos) << reply;
  EXPECT_NE(reply.find(R"({"n":2})"), std::string::npos) << reply;
  EXPECT_TRUE(closed);
  EXPECT_EQ(invocations(), before + 3);

  // HTTP/1.0 with a Content-Length and no Host is fine.
  const std::string reply10 = raw_exchange(
      daemon_.port(), "POST /v1/functions/echo/invoke HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}",
      10000, &closed);
  EXPECT_EQ(statuses(reply10), (std::vector<int>{200})) << reply10;
  EXPECT_EQ(invocations(), before + 4);
}

}  // namespace
}  // namespace ember::testing
