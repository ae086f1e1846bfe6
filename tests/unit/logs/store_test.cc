#include "ember/logs/store.h"

#include <gtest/gtest.h>

namespace ember::logs {
namespace {

LogLine line(std::string text, std::string req = "r") {
  LogLine l;
  l.stream = "stdout";
  l.request_id = std::move(req);
  l.text = std::move(text);
  return l;
}

TEST(LogRing, KeepsLinesInOrderWithSequenceNumbers) {
  LogRing ring(1 << 20);
  ring.append(line("a"));
  ring.append(line("b"));
  bool truncated = true;
  auto all = ring.read(0, 10, truncated);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_FALSE(truncated);
  EXPECT_EQ(all[0].seq, 1u);
  EXPECT_EQ(all[1].text, "b");
  auto from2 = ring.read(2, 10, truncated);
  ASSERT_EQ(from2.size(), 1u);
  EXPECT_EQ(from2[0].text, "b");
  EXPECT_TRUE(ring.read(3, 10, truncated).empty());
  EXPECT_EQ(ring.read(0, 1, truncated).size(), 1u);
}

TEST(LogRing, StaysWithinItsBudgetAndMarksTruncation) {
  LogRing ring(10 * 1024);
  for (int i = 0; i < 100'000; ++i) ring.append(line(std::string(100, 'x')));
  EXPECT_LE(ring.bytes(), 10u * 1024);
  bool truncated = false;
  auto lines = ring.read(0, 1'000'000, truncated);
  EXPECT_TRUE(truncated);
  EXPECT_LT(lines.size(), 100u);
  EXPECT_EQ(lines.back().seq, 100'000u);
  EXPECT_EQ(ring.next_seq(), 100'001u);
}

TEST(LogRing, SubscribersHearEveryAppend) {
  LogRing ring(1 << 20);
  int heard = 0;
  auto id = ring.subscribe([&] { ++heard; });
  ring.append(line("a"));
  ring.append(line("b"));
  ring.unsubscribe(id);
  ring.append(line("c"));
  EXPECT_EQ(heard, 2);
}

TEST(LogStore, OneRingPerFunction) {
  LogStore store(1 << 20);
  store.ring("a").append(line("x"));
  store.ring("b").append(line("y"));
  bool t;
  EXPECT_EQ(store.ring("a").read(0, 10, t)[0].text, "x");
  store.erase("a");
  EXPECT_TRUE(store.ring("a").read(0, 10, t).empty());
}

}  // namespace
}  // namespace ember::logs
