#include "write_batch.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "ember/common/json_fields.h"

namespace ember::kv {

Result<std::optional<Row>*> WriteBatch::row(std::string_view ns, std::string_view key) {
  auto id = std::make_pair(std::string(ns), std::string(key));
  auto it = rows_.find(id);
  if (it == rows_.end()) {
    auto stored = read_row_(ns, key);
    if (!stored) return stored.error();
    it = rows_.emplace(std::move(id), std::move(*stored)).first;
  }
  return &it->second;
}

Result<Usage*> WriteBatch::usage(std::string_view ns) {
  auto it = namespaces_.find(ns);
  if (it == namespaces_.end()) {
    auto stored = read_usage_(ns);
    if (!stored) return stored.error();
    it = namespaces_.emplace(std::string(ns), *stored).first;
  }
  return &it->second;
}

void WriteBatch::for_each_changed(
    const std::function<void(const Key&, const std::optional<Row>&)>& f) const {
  for (const auto& id : changed_) f(id, rows_.find(id)->second);
}

// Sets the item to `value` at the namespace's next version (with `expires_ms`), keeping the
// namespace within its quota. Checks first: nothing changes when it fails.
Status WriteBatch::store(const Request& req, std::string value, std::optional<int64_t> expires_ms,
                         std::optional<Row>& slot, Usage& used) {
  const int64_t before = slot ? static_cast<int64_t>(req.key.size() + slot->value.size()) : 0;
  const int64_t after = static_cast<int64_t>(req.key.size() + value.size());
  if (after > before &&
      used.bytes + (after - before) > static_cast<int64_t>(limits_.namespace_quota_bytes)) {
    return too_large(
        fmt::format("namespace {} would hold {} bytes, over its quota of {} bytes", req.ns,
                    used.bytes + (after - before), limits_.namespace_quota_bytes),
        "quota");
  }
  // Versions come from the namespace's counter: never reused, even after a delete or an
  // expiry, so a stale if_version can never match a key written again since.
  used.version += 1;
  used.bytes += after - before;
  slot = Row{std::move(value), used.version, expires_ms};
  changed_.emplace(req.ns, req.key);
  return {};
}

Status WriteBatch::apply(const Request& req, Reply& reply) {
  auto slot = row(req.ns, req.key);
  if (!slot) return slot.error();
  std::optional<Row>& old = **slot;
  auto used = usage(req.ns);
  if (!used) return used.error();
  const bool live = old && old->live(now_ms_);
  switch (req.op) {
    case Op::kPut: {
      if (req.options.if_version) {
        const uint64_t current = live ? old->version : 0;
        if (current != *req.options.if_version) {
          return Error::conflict(fmt::format("key {} is at version {}, not {}", req.key, current,
                                             *req.options.if_version));
        }
      }
      std::optional<int64_t> expires;
      if (req.options.ttl_s) expires = now_ms_ + *req.options.ttl_s * 1000;
      if (auto st = store(req, req.value, expires, old, **used); !st) return st;
      reply.version = old->version;
      return {};
    }
    case Op::kIncr: {
      int64_t current = 0;
      if (live) {
        auto j = parse_untrusted(old->value);
        // Integers beyond int64 (json reads them as unsigned) are not counters either.
        if (!j.is_number_integer() ||
            (j.is_number_unsigned() && j.get<uint64_t>() > uint64_t{INT64_MAX})) {
          return Error::invalid(fmt::format("key {} does not hold an integer", req.key), "delta");
        }
        current = j.get<int64_t>();
      }
      int64_t result = 0;
      if (__builtin_add_overflow(current, req.delta, &result)) {
        return Error::invalid(fmt::format("incrementing key {} overflows", req.key), "delta");
      }
      const auto expires = live ? old->expires_ms : std::nullopt;
      if (auto st = store(req, std::to_string(result), expires, old, **used); !st) return st;
      reply.number = result;
      reply.version = old->version;
      return {};
    }
    case Op::kRemove: {
      reply.removed = live;
      if (!old) return {};
      (*used)->bytes -= static_cast<int64_t>(req.key.size() + old->value.size());
      old.reset();
      changed_.emplace(req.ns, req.key);
      return {};
    }
    case Op::kGet:
    case Op::kList:
      break;
  }
  return Error::invalid("not a write");
}

void reply_all(std::vector<Pending>& batch) {
  for (Pending& p : batch) p.done(std::move(p.reply));
}

void QueuedStore::execute(Request request, Done done) {
  if (auto st = check_request(request, limits_); !st) {
    Reply reply;
    reply.status = st;
    done(std::move(reply));
    return;
  }
  BatchQueue<Pending>& to = is_write(request.op) ? writer_ : reader_;
  to.push(Pending{std::move(request), std::move(done), {}});
}

Stats QueuedStore::stats() const {
  std::lock_guard lock(stats_mu_);
  return stats_;
}

void QueuedStore::start_threads() {
  writer_.start([this](std::vector<Pending>& batch) {
    commit(batch);
    reply_all(batch);
  });
  reader_.start([this](std::vector<Pending>& batch) {
    for (Pending& p : batch) p.reply = read(p.request);
    reply_all(batch);
  });
}

void QueuedStore::stop_threads() {
  writer_.stop();
  reader_.stop();
}

void QueuedStore::counted(size_t writes, bool committed) {
  std::lock_guard lock(stats_mu_);
  stats_.writes += writes;
  stats_.commits += committed ? 1 : 0;
}

std::string past_prefix(std::string_view prefix) {
  std::string past(prefix);
  while (!past.empty() && static_cast<unsigned char>(past.back()) == 0xff) past.pop_back();
  if (!past.empty()) past.back() = static_cast<char>(static_cast<unsigned char>(past.back()) + 1);
  return past;
}

}  // namespace ember::kv
