#include "ember/kv/service.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace ember::kv {

using nlohmann::json;

namespace {

Error invalid(std::string message) { return Error::invalid(std::move(message), "request"); }

// Reads `name` from the request as a string; absent: `fallback`.
Result<std::string> string_field(const json& meta, const char* name, std::string fallback = {}) {
  auto it = meta.find(name);
  if (it == meta.end() || it->is_null()) return fallback;
  if (!it->is_string()) return invalid(fmt::format("{} must be a string", name));
  return it->get<std::string>();
}

Result<std::optional<int64_t>> integer_field(const json& meta, const char* name) {
  auto it = meta.find(name);
  if (it == meta.end() || it->is_null()) return std::optional<int64_t>();
  if (!it->is_number_integer() ||
      (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t{INT64_MAX})) {
    return invalid(fmt::format("{} must be an integer of 64 bits", name));
  }
  return std::optional<int64_t>(it->get<int64_t>());
}

// The request a KV_REQUEST's meta and body describe; the namespace defaults to the caller's.
Result<Request> parse_request(const json& meta, std::string body, const Grants& grants) {
  if (!meta.is_object()) return invalid("a request's meta must be a JSON object");
  auto op_text = string_field(meta, "op");
  if (!op_text) return op_text.error();
  auto op = parse_op(*op_text);
  if (!op) return invalid(fmt::format("unknown operation \"{}\"", *op_text));
  Request req;
  req.op = *op;
  auto ns = string_field(meta, "ns", grants.own);
  if (!ns) return ns.error();
  req.ns = std::move(*ns);
  if (req.op != Op::kList) {
    auto key = string_field(meta, "key");
    if (!key) return key.error();
    req.key = std::move(*key);
  }
  switch (req.op) {
    case Op::kPut: {
      req.value = std::move(body);
      auto ttl = integer_field(meta, "ttl_s");
      if (!ttl) return ttl.error();
      req.options.ttl_s = *ttl;
      auto if_version = integer_field(meta, "if_version");
      if (!if_version) return if_version.error();
      if (*if_version) {
        if (**if_version < 0) return invalid("if_version must be 0 or more");
        req.options.if_version = static_cast<uint64_t>(**if_version);
      }
      break;
    }
    case Op::kIncr: {
      auto delta = integer_field(meta, "delta");
      if (!delta) return delta.error();
      req.delta = delta->value_or(1);
      break;
    }
    case Op::kList: {
      auto prefix = string_field(meta, "prefix");
      if (!prefix) return prefix.error();
      req.prefix = std::move(*prefix);
      auto cursor = string_field(meta, "cursor");
      if (!cursor) return cursor.error();
      req.cursor = std::move(*cursor);
      auto limit = integer_field(meta, "limit");
      if (!limit) return limit.error();
      if (*limit && **limit < 1) return invalid("limit must be 1 or more");
      req.limit = static_cast<size_t>(limit->value_or(100));
      break;
    }
    case Op::kGet:
    case Op::kRemove:
      break;
  }
  return req;
}

// The reply's meta and body for what the store answered. Formatted by hand: this runs for
// every operation, and only list's cursor is text that needs escaping.
std::pair<std::string, std::string> reply_wire(Op op, Reply& reply) {
  if (!reply.status) return {Service::error_meta(reply.status.error()), {}};
  switch (op) {
    case Op::kGet:
      if (!reply.item) return {R"({"ok":true,"found":false})", {}};
      return {fmt::format(R"({{"ok":true,"found":true,"version":{}}})", reply.item->version),
              std::move(reply.item->value)};
    case Op::kPut:
      return {fmt::format(R"({{"ok":true,"version":{}}})", reply.version), {}};
    case Op::kIncr:
      return {fmt::format(R"({{"ok":true,"value":{},"version":{}}})", reply.number, reply.version),
              {}};
    case Op::kRemove:
      return {reply.removed ? R"({"ok":true,"deleted":true})" : R"({"ok":true,"deleted":false})",
              {}};
    case Op::kList:
      break;
  }
  return {json{{"ok", true}, {"cursor", reply.page.cursor}}.dump(-1, ' ', false,
                                                                 json::error_handler_t::replace),
          Service::page_json(reply.page)};
}

}  // namespace

std::optional<Access> parse_access(std::string_view text) {
  if (text == "r") return Access::kRead;
  if (text == "rw") return Access::kReadWrite;
  return std::nullopt;
}

Access Grants::access(std::string_view ns) const {
  if (ns == own) return Access::kReadWrite;
  auto it = shared.find(ns);
  return it == shared.end() ? Access::kNone : it->second;
}

Service::Service(Store& store, ServiceOptions options, const Clock& clock)
    : store_(store), options_(options), watch_(std::make_shared<Watch>(Watch{{}, &clock})) {}

std::string Service::error_meta(const Error& error) {
  return json{{"ok", false}, {"errorType", error_type(error)}, {"errorMessage", error.message}}
      .dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string Service::page_json(const Page& page) {
  std::string out = "[";
  for (const Item& item : page.items) {
    if (out.size() > 1) out += ',';
    out += R"({"key":)";
    out += json(item.key).dump(-1, ' ', false, json::error_handler_t::replace);
    out += R"(,"value":)";
    out += item.value;  // JSON text already, checked when it was written
    out += fmt::format(R"(,"version":{})", item.version);
    if (item.expires_ms) out += fmt::format(R"(,"expiresMs":{})", *item.expires_ms);
    out += '}';
  }
  out += ']';
  return out;
}

Counted Service::handle(const Grants& grants, const json& meta, std::string body,
                        std::optional<uint32_t> ops_in_call, Done done) {
  auto refuse = [&](const Error& e) {
    done(error_meta(e), {});
    return Counted::kNone;
  };
  if (!ops_in_call) {
    return refuse(invalid(
        "the call this operation belongs to has ended: await each operation before returning"));
  }
  if (*ops_in_call >= options_.max_ops_per_call) {
    return refuse(too_large(
        fmt::format("a call may make at most {} key-value operations", options_.max_ops_per_call),
        "ops"));
  }
  auto req = parse_request(meta, std::move(body), grants);
  if (!req) return refuse(req.error());
  if (auto st = check_namespace(req->ns); !st) return refuse(st.error());
  const Access access = grants.access(req->ns);
  const bool write = is_write(req->op);
  if (access == Access::kNone || (write && access != Access::kReadWrite)) {
    return refuse(Error::not_found(
        fmt::format("this function may not {} namespace {}: grant it in the manifest's \"kv\": "
                    "{{\"shared\": {{\"{}\": \"{}\"}}}}",
                    write ? "write to" : "read", req->ns, req->ns, write ? "rw" : "r")));
  }
  const Op op = req->op;
  const auto started = watch_->clock->now();
  // The reply may come after this service is gone (the store drains its queue when it stops):
  // it holds what it needs, not the service.
  store_.execute(std::move(*req), [watch = watch_, op, started, function = grants.own,
                                   done = std::move(done)](Reply reply) {
    if (watch->observer) {
      watch->observer(OpRecord{function, op,
                               reply.status ? std::string_view() : error_type(reply.status.error()),
                               watch->clock->now() - started});
    }
    auto [meta_out, body_out] = reply_wire(op, reply);
    done(std::move(meta_out), std::move(body_out));
  });
  return write ? Counted::kWrite : Counted::kRead;
}

}  // namespace ember::kv
