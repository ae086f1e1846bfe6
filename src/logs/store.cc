#include "ember/logs/store.h"

namespace ember::logs {

namespace {
// A line costs its text plus a fixed share for its fields and the deque slot.
size_t cost(const LogLine& l) { return l.text.size() + l.request_id.size() + 64; }
}  // namespace

nlohmann::json LogLine::to_json() const {
  return nlohmann::json{{"seq", seq},
                        {"time_ms", time_ms},
                        {"stream", stream},
                        {"request_id", request_id},
                        {"text", text}};
}

void LogRing::append(LogLine line) {
  line.seq = next_seq_++;
  bytes_ += cost(line);
  lines_.push_back(std::move(line));
  while (bytes_ > max_bytes_ && lines_.size() > 1) {
    bytes_ -= cost(lines_.front());
    lines_.pop_front();
  }
  // Copy first: a subscriber may unsubscribe while being called.
  if (!subscribers_.empty()) {
    auto subs = subscribers_;
    for (auto& [_, fn] : subs) fn();
  }
}

std::vector<LogLine> LogRing::read(uint64_t from, size_t limit, bool& truncated) const {
  std::vector<LogLine> out;
  truncated = false;
  if (lines_.empty()) return out;
  const uint64_t first = lines_.front().seq;
  if (from < first) {
    truncated = first > 1;  // something before `first` was dropped
    from = first;
  }
  for (size_t i = static_cast<size_t>(from - first); i < lines_.size() && out.size() < limit; ++i) {
    out.push_back(lines_[i]);
  }
  return out;
}

uint64_t LogRing::subscribe(std::function<void()> on_append) {
  uint64_t id = next_subscriber_++;
  subscribers_.emplace(id, std::move(on_append));
  return id;
}

void LogRing::unsubscribe(uint64_t id) { subscribers_.erase(id); }

LogRing& LogStore::ring(const std::string& function) {
  auto& slot = rings_[function];
  if (!slot) slot = std::make_unique<LogRing>(bytes_per_function_);
  return *slot;
}

void LogStore::unsubscribe(const std::string& function, uint64_t id) {
  auto it = rings_.find(function);
  if (it != rings_.end()) it->second->unsubscribe(id);
}

size_t LogStore::bytes() const {
  size_t total = 0;
  for (const auto& [_, r] : rings_) total += r->bytes();
  return total;
}

}  // namespace ember::logs
