#include "ember/kv/store.h"

#include <fmt/format.h>

#include <future>
#include <nlohmann/json.hpp>

#include "ember/common/json_fields.h"
#include "ember/common/text.h"

namespace ember::kv {

namespace {

constexpr int64_t kMaxTtlSeconds = int64_t{10} * 366 * 24 * 3600;  // ten years
constexpr std::string_view kOpNames[] = {"get", "put", "incr", "delete", "list"};

}  // namespace

Error too_large(std::string message, std::string field) {
  Error e = Error::too_large(std::move(message));
  e.field = std::move(field);
  return e;
}

std::string_view error_type(const Error& error) {
  switch (error.code) {
    case Errc::kInvalid:
      if (error.field == "key") return "KvInvalidKey";
      if (error.field == "value") return "KvInvalidValue";
      if (error.field == "ns") return "KvInvalidNamespace";
      if (error.field == "delta") return "KvNotAnInteger";
      return "KvInvalidRequest";
    case Errc::kTooLarge:
      if (error.field == "key") return "KvKeyTooLarge";
      if (error.field == "value") return "KvValueTooLarge";
      if (error.field == "ops") return "KvTooManyOperations";
      return "KvQuotaExceeded";
    case Errc::kConflict:
      return "KvConditionFailed";
    case Errc::kNotFound:
      return error.field == "key" ? "KvKeyNotFound" : "KvAccessDenied";
    case Errc::kUnsupported:
    case Errc::kUnavailable:
    case Errc::kSystem:
      break;
  }
  return "KvUnavailable";
}

std::string_view op_name(Op op) { return kOpNames[static_cast<size_t>(op)]; }

std::optional<Op> parse_op(std::string_view name) {
  for (size_t i = 0; i < std::size(kOpNames); ++i) {
    if (kOpNames[i] == name) return static_cast<Op>(i);
  }
  return std::nullopt;
}

Reply Store::run(Request request) {
  std::promise<Reply> promise;
  auto reply = promise.get_future();
  execute(std::move(request), [&promise](Reply r) { promise.set_value(std::move(r)); });
  return reply.get();
}

Result<std::optional<Item>> Store::get(std::string_view ns, std::string_view key) {
  Reply r = run(Request{Op::kGet, std::string(ns), std::string(key)});
  if (!r.status) return r.status.error();
  return std::move(r.item);
}

Result<uint64_t> Store::put(std::string_view ns, std::string_view key, std::string_view value,
                            const PutOptions& options) {
  Reply r = run(Request{Op::kPut, std::string(ns), std::string(key), std::string(value), options});
  if (!r.status) return r.status.error();
  return r.version;
}

Result<int64_t> Store::incr(std::string_view ns, std::string_view key, int64_t delta) {
  Request req{Op::kIncr, std::string(ns), std::string(key)};
  req.delta = delta;
  Reply r = run(std::move(req));
  if (!r.status) return r.status.error();
  return r.number;
}

Result<bool> Store::remove(std::string_view ns, std::string_view key) {
  Reply r = run(Request{Op::kRemove, std::string(ns), std::string(key)});
  if (!r.status) return r.status.error();
  return r.removed;
}

Result<Page> Store::list(std::string_view ns, std::string_view prefix, size_t limit,
                         std::string_view cursor) {
  Request req{Op::kList, std::string(ns)};
  req.prefix = prefix;
  req.cursor = cursor;
  req.limit = limit;
  Reply r = run(std::move(req));
  if (!r.status) return r.status.error();
  return std::move(r.page);
}

Status check_namespace(std::string_view ns) {
  // The names functions have, so a function's own namespace is its name.
  bool ok = !ns.empty() && ns.size() <= 63 &&
            ((ns[0] >= 'a' && ns[0] <= 'z') || (ns[0] >= '0' && ns[0] <= '9'));
  for (char c : ns) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
  if (!ok) {
    return Error::invalid("a namespace is 1 to 63 of a-z, 0-9 and -, not starting with -", "ns");
  }
  return {};
}

Status check_key(std::string_view key, const Limits& limits) {
  if (key.empty()) return Error::invalid("a key may not be empty", "key");
  if (key.size() > limits.max_key_bytes) {
    return too_large(
        fmt::format("a key is at most {} bytes, got {}", limits.max_key_bytes, key.size()), "key");
  }
  for (unsigned char c : key) {
    if (c < 0x20 || c == 0x7f) {
      return Error::invalid("a key may not hold control characters", "key");
    }
  }
  if (!is_valid_utf8(key)) return Error::invalid("a key must be UTF-8 text", "key");
  return {};
}

Status check_value(std::string_view value, const Limits& limits) {
  if (value.size() > limits.max_value_bytes) {
    return too_large(fmt::format("a value is at most {} bytes of JSON, got {}",
                                 limits.max_value_bytes, value.size()),
                     "value");
  }
  if (json_depth(value) > kMaxJsonDepth) {
    return Error::invalid(fmt::format("a value may nest at most {} levels deep", kMaxJsonDepth),
                          "value");
  }
  if (!nlohmann::json::accept(value)) return Error::invalid("a value must be JSON", "value");
  return {};
}

Status check_request(const Request& request, const Limits& limits) {
  if (auto st = check_namespace(request.ns); !st) return st;
  switch (request.op) {
    case Op::kList:
      if (request.prefix.size() > limits.max_key_bytes || !is_valid_utf8(request.prefix)) {
        return Error::invalid("a prefix is UTF-8 text no longer than a key", "prefix");
      }
      if (request.cursor.size() > limits.max_key_bytes || !is_valid_utf8(request.cursor)) {
        return Error::invalid("a cursor is a key a page of list() ended with", "cursor");
      }
      return {};
    case Op::kPut:
      if (request.options.ttl_s &&
          (*request.options.ttl_s <= 0 || *request.options.ttl_s > kMaxTtlSeconds)) {
        return Error::invalid(
            fmt::format("ttl_s must be a whole number of seconds from 1 to {}", kMaxTtlSeconds),
            "ttl_s");
      }
      if (auto st = check_key(request.key, limits); !st) return st;
      return check_value(request.value, limits);
    case Op::kGet:
    case Op::kIncr:
    case Op::kRemove:
      return check_key(request.key, limits);
  }
  return {};
}

}  // namespace ember::kv
