// Captured function output: every stdout and stderr line of every instance, kept per function
// in a ring bounded in bytes, so a function printing without end costs the daemon a fixed
// amount of memory.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ember::logs {

struct LogLine {
  uint64_t seq = 0;     // position in the function's log, from 1, never reused
  int64_t time_ms = 0;  // wall clock
  std::string stream;   // "stdout", "stderr" or "ember" (lines the daemon adds)
  std::string request_id;
  std::string text;
  nlohmann::json to_json() const;
};

// One function's log. One owner thread (the event loop).
class LogRing {
 public:
  explicit LogRing(size_t max_bytes) : max_bytes_(max_bytes) {}

  void append(LogLine line);
  // Lines with seq >= `from`, at most `limit`. When `from` is older than the oldest kept line,
  // `truncated` is set: the lines in between were dropped.
  std::vector<LogLine> read(uint64_t from, size_t limit, bool& truncated) const;
  uint64_t next_seq() const { return next_seq_; }
  size_t bytes() const { return bytes_; }

  // Called after each append; used by followers. Returns an id for unsubscribe.
  uint64_t subscribe(std::function<void()> on_append);
  void unsubscribe(uint64_t id);

 private:
  size_t max_bytes_;
  size_t bytes_ = 0;
  uint64_t next_seq_ = 1;
  std::deque<LogLine> lines_;
  uint64_t next_subscriber_ = 1;
  std::map<uint64_t, std::function<void()>> subscribers_;
};

// Log rings by function name. One owner thread.
class LogStore {
 public:
  explicit LogStore(size_t bytes_per_function) : bytes_per_function_(bytes_per_function) {}
  LogRing& ring(const std::string& function);
  void erase(const std::string& function) { rings_.erase(function); }
  // Unsubscribes from a function's ring if it still exists (it may have been erased since).
  void unsubscribe(const std::string& function, uint64_t id);
  size_t bytes() const;

 private:
  size_t bytes_per_function_;
  std::map<std::string, std::unique_ptr<LogRing>> rings_;
};

}  // namespace ember::logs
