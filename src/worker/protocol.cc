#include "ember/worker/protocol.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace ember::worker {

namespace {

void put_u32(std::string& out, uint32_t v) {
  char b[4] = {static_cast<char>(v & 0xff), static_cast<char>((v >> 8) & 0xff),
               static_cast<char>((v >> 16) & 0xff), static_cast<char>((v >> 24) & 0xff)};
  out.append(b, 4);
}

uint32_t get_u32(const char* p) {
  auto u = [&](int i) { return static_cast<uint32_t>(static_cast<unsigned char>(p[i])); };
  return u(0) | (u(1) << 8) | (u(2) << 16) | (u(3) << 24);
}

bool known_type(uint32_t t) { return t >= 1 && t <= 13; }

void encode_into(std::string& out, FrameType type, uint32_t id, std::string_view meta,
                 std::string_view body) {
  out.reserve(out.size() + kHeaderBytes + meta.size() + body.size());
  put_u32(out, static_cast<uint32_t>(type));
  put_u32(out, id);
  put_u32(out, static_cast<uint32_t>(meta.size()));
  put_u32(out, static_cast<uint32_t>(body.size()));
  out.append(meta);
  out.append(body);
}

// A JSON string: as it is when nothing in it needs escaping (request ids, kinds, version and
// alias names), else as nlohmann writes it.
void append_json_string(std::string& out, std::string_view s) {
  const bool plain = std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
  });
  if (plain) {
    out += '"';
    out += s;
    out += '"';
    return;
  }
  out +=
      nlohmann::json(std::string(s)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

std::string invoke_meta(std::string_view request_id, int64_t deadline_ms, int64_t timeout_ms,
                        std::string_view kind, std::string_view qualifier) {
  std::string out;
  out.reserve(112 + request_id.size() + qualifier.size());
  out += "{\"requestId\":";
  append_json_string(out, request_id);
  fmt::format_to(std::back_inserter(out),
                 ",\"deadlineMs\":{},\"timeoutMs\":{},\"kind\":", deadline_ms, timeout_ms);
  append_json_string(out, kind);
  if (!qualifier.empty()) {
    out += ",\"qualifier\":";
    append_json_string(out, qualifier);
  }
  out += '}';
  return out;
}

void encode(const Frame& frame, std::string& out) {
  encode_into(out, frame.type, frame.id, frame.meta, frame.body);
}

std::string encode(FrameType type, uint32_t id, std::string_view meta, std::string_view body) {
  std::string out;
  encode_into(out, type, id, meta, body);
  return out;
}

std::string encode(const Frame& frame) {
  std::string out;
  encode(frame, out);
  return out;
}

void FrameDecoder::feed(std::string_view bytes) {
  // Compact once the consumed prefix dominates, so a long-lived stream does not grow.
  if (offset_ > 0 && offset_ >= buffer_.size() / 2) {
    buffer_.erase(0, offset_);
    offset_ = 0;
  }
  buffer_.append(bytes);
}

Result<std::optional<Frame>> FrameDecoder::next() {
  const size_t available = buffer_.size() - offset_;
  if (available < kHeaderBytes) return std::optional<Frame>();
  const char* p = buffer_.data() + offset_;
  const uint32_t type = get_u32(p);
  const uint32_t meta_len = get_u32(p + 8);
  const uint32_t body_len = get_u32(p + 12);
  if (!known_type(type)) {
    return Error::invalid(fmt::format("worker protocol: unknown frame type {}", type));
  }
  if (meta_len > kMaxMetaBytes || body_len > kMaxBodyBytes) {
    return Error::invalid(
        fmt::format("worker protocol: frame of {} meta and {} body bytes is over the limits",
                    meta_len, body_len));
  }
  const size_t total = kHeaderBytes + meta_len + body_len;
  if (available < total) return std::optional<Frame>();
  Frame f;
  f.type = static_cast<FrameType>(type);
  f.id = get_u32(p + 4);
  f.meta.assign(p + kHeaderBytes, meta_len);
  f.body.assign(p + kHeaderBytes + meta_len, body_len);
  offset_ += total;
  if (offset_ == buffer_.size()) {
    buffer_.clear();
    offset_ = 0;
  }
  return std::optional<Frame>(std::move(f));
}

}  // namespace ember::worker
