// The write path every KV backend shares: the writes of one commit applied in order to a view
// of the rows and namespaces they touch, each read once from storage and then kept in memory,
// so that a hot key written by every write of a batch costs one read and one write of its row,
// however many writes there were. The backend reads through Source and writes back what
// changed; the rules (versions, quotas, conditions, counters, time to live) live here once.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ember/common/batch_queue.h"
#include "ember/kv/store.h"

namespace ember::kv {

// A key's row as stored, expired or not.
struct Row {
  std::string value;
  uint64_t version = 0;
  std::optional<int64_t> expires_ms;
  bool live(int64_t now_ms) const { return !expires_ms || *expires_ms > now_ms; }
};

// A namespace's row: the bytes its keys and values take, and the last version given in it.
struct Usage {
  int64_t bytes = 0;
  uint64_t version = 0;
};

class WriteBatch {
 public:
  using ReadRow =
      std::function<Result<std::optional<Row>>(std::string_view ns, std::string_view key)>;
  using ReadUsage = std::function<Result<Usage>(std::string_view ns)>;

  WriteBatch(ReadRow read_row, ReadUsage read_usage, const Limits& limits, int64_t now_ms)
      : read_row_(std::move(read_row)),
        read_usage_(std::move(read_usage)),
        limits_(limits),
        now_ms_(now_ms) {}

  // Applies one write; `reply` gets its outcome. Checks first: a write that fails changes
  // nothing. An error with Errc::kSystem is storage's, and the batch must not commit.
  Status apply(const Request& req, Reply& reply);
  // The namespace as the batch sees it (read once).
  Result<Usage*> usage(std::string_view ns);

  using Key = std::pair<std::string, std::string>;
  // Each row the batch changed: its new content, or nullopt when it was removed.
  void for_each_changed(const std::function<void(const Key&, const std::optional<Row>&)>& f) const;
  const std::map<std::string, Usage, std::less<>>& namespaces() const { return namespaces_; }

 private:
  Result<std::optional<Row>*> row(std::string_view ns, std::string_view key);
  Status store(const Request& req, std::string value, std::optional<int64_t> expires_ms,
               std::optional<Row>& slot, Usage& used);

  ReadRow read_row_;
  ReadUsage read_usage_;
  const Limits& limits_;
  int64_t now_ms_;
  std::map<Key, std::optional<Row>> rows_;
  std::map<std::string, Usage, std::less<>> namespaces_;
  std::set<Key> changed_;
};

// A request waiting for a store's thread, with the callback its reply goes to.
struct Pending {
  Request request;
  Store::Done done;
  Reply reply;
};

// Hands every request of a served batch its reply.
void reply_all(std::vector<Pending>& batch);

// What every backend does around its storage: a request is checked, then queued to the
// committing thread (the writes queued during one commit share the next: group commit) or to
// the reading thread; writes and commits are counted.
class QueuedStore : public Store {
 public:
  explicit QueuedStore(Limits limits) : limits_(limits) {}
  void execute(Request request, Done done) final;
  Stats stats() const final;
  const Limits& limits() const final { return limits_; }

 protected:
  // On the committing thread: commits the batch's writes and sets each reply.
  virtual void commit(std::vector<Pending>& batch) = 0;
  // On the reading thread.
  virtual Reply read(const Request& request) = 0;
  // From the backend's constructor, once it can serve; from its destructor, before its
  // connections close.
  void start_threads();
  void stop_threads();
  void counted(size_t writes, bool committed);

  const Limits limits_;

 private:
  mutable std::mutex stats_mu_;
  Stats stats_;
  BatchQueue<Pending> writer_;
  BatchQueue<Pending> reader_;
};

// The first string past every string that starts with `prefix` in byte order (its last byte
// below 0xff, plus one): where a range scan for the prefix may stop. Empty when there is none.
std::string past_prefix(std::string_view prefix);

}  // namespace ember::kv
