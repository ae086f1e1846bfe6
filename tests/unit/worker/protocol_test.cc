#include "ember/worker/protocol.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace ember::worker {
namespace {

TEST(Protocol, HeaderIsLittleEndianAndFixedSize) {
  std::string wire = encode(Frame{FrameType::kInvoke, 0x01020304, "{}", "abc"});
  ASSERT_EQ(wire.size(), kHeaderBytes + 2 + 3);
  EXPECT_EQ(wire.substr(0, 4), std::string("\x03\x00\x00\x00", 4));
  EXPECT_EQ(wire.substr(4, 4), std::string("\x04\x03\x02\x01", 4));
  EXPECT_EQ(wire.substr(8, 4), std::string("\x02\x00\x00\x00", 4));
  EXPECT_EQ(wire.substr(12, 4), std::string("\x03\x00\x00\x00", 4));
  EXPECT_EQ(wire.substr(16), "{}abc");
}

TEST(Protocol, DecodesFramesSplitAtEveryByte) {
  std::string wire = encode(Frame{FrameType::kResult, 7, R"({"a":1})", "hello"});
  wire += encode(Frame{FrameType::kReady, 0, "{}", ""});
  FrameDecoder d;
  std::vector<Frame> got;
  for (char c : wire) {
    d.feed(std::string_view(&c, 1));
    while (true) {
      auto f = d.next();
      ASSERT_TRUE(f.ok());
      if (!*f) break;
      got.push_back(std::move(**f));
    }
  }
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].type, FrameType::kResult);
  EXPECT_EQ(got[0].id, 7u);
  EXPECT_EQ(got[0].meta, R"({"a":1})");
  EXPECT_EQ(got[0].body, "hello");
  EXPECT_EQ(got[1].type, FrameType::kReady);
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(Protocol, LargeBodiesPassIntact) {
  std::string body(6 << 20, '\0');
  for (size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 31);
  FrameDecoder d;
  d.feed(encode(Frame{FrameType::kInvoke, 1, "{}", body}));
  auto f = d.next();
  ASSERT_TRUE(f.ok() && f->has_value());
  EXPECT_EQ((*f)->body, body);
}

TEST(Protocol, RejectsUnknownTypesAndOversizedFrames) {
  {
    FrameDecoder d;
    std::string wire = encode(Frame{FrameType::kReady, 0, "{}", ""});
    wire[0] = 42;
    d.feed(wire);
    EXPECT_FALSE(d.next().ok());
  }
  {
    FrameDecoder d;
    std::string header = encode(Frame{FrameType::kResult, 0, "", ""});
    header[12] = '\xff';
    header[13] = '\xff';
    header[14] = '\xff';
    header[15] = '\x7f';  // body_len near 2 GiB: refused from the header alone
    d.feed(header);
    EXPECT_FALSE(d.next().ok());
  }
}

TEST(Protocol, WaitsForTheRestOfAFrame) {
  std::string wire = encode(Frame{FrameType::kError, 3, R"({"errorType":"E"})", ""});
  FrameDecoder d;
  d.feed(wire.substr(0, wire.size() - 1));
  auto partial = d.next();
  ASSERT_TRUE(partial.ok());
  EXPECT_FALSE(partial->has_value());
  d.feed(wire.substr(wire.size() - 1));
  auto whole = d.next();
  ASSERT_TRUE(whole.ok() && whole->has_value());
  EXPECT_EQ((*whole)->id, 3u);
}

// Written by hand for speed: it must still be the JSON object the shims parse, whatever the
// strings hold.
TEST(Protocol, InvokeMetaIsTheJsonObjectOfTheContract) {
  auto plain = nlohmann::json::parse(invoke_meta("5d1c-01", 1795517443842, 3000, "invoke", ""));
  EXPECT_EQ(plain, (nlohmann::json{{"requestId", "5d1c-01"},
                                   {"deadlineMs", 1795517443842},
                                   {"timeoutMs", 3000},
                                   {"kind", "invoke"}}));
  const std::string odd = "a\"b\\c\n\x01é";
  auto escaped = nlohmann::json::parse(invoke_meta(odd, 1, 2, "http", odd));
  EXPECT_EQ(escaped["requestId"], odd);
  EXPECT_EQ(escaped["qualifier"], odd);
  EXPECT_EQ(escaped["kind"], "http");
}

}  // namespace
}  // namespace ember::worker
