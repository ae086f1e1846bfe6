#include "ember/common/json_fields.h"

#include <fmt/format.h>

namespace ember {

using nlohmann::json;

JsonFields::JsonFields(const json& object, std::string prefix)
    : object_(object), prefix_(std::move(prefix)) {
  if (!object_.is_object()) {
    failed_ = true;
    error_ = Error::invalid(
        fmt::format("{}: must be a JSON object", prefix_.empty() ? "document" : prefix_), prefix_);
  }
}

std::string JsonFields::path(std::string_view key) const {
  return prefix_.empty() ? std::string(key) : fmt::format("{}.{}", prefix_, key);
}

void JsonFields::fail(std::string_view key, std::string_view what) {
  if (failed_) return;
  failed_ = true;
  std::string p = path(key);
  error_ = Error::invalid(fmt::format("{}: {}", p, what), p);
}

const json* JsonFields::take(std::string_view key) {
  if (failed_) return nullptr;
  seen_.emplace(key);
  auto it = object_.find(key);
  if (it == object_.end()) return nullptr;
  return &*it;
}

void JsonFields::integer(std::string_view key, int64_t& out, int64_t min, int64_t max) {
  const json* v = take(key);
  if (!v) return;
  int64_t value = 0;
  if (v->is_number_unsigned()) {
    uint64_t u = v->get<uint64_t>();
    value = u > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(u);
  } else if (v->is_number_integer()) {
    value = v->get<int64_t>();
  } else {
    fail(key, fmt::format("must be an integer from {} to {}, got {}", min, max, v->dump()));
    return;
  }
  if (value < min || value > max) {
    fail(key, fmt::format("must be an integer from {} to {}, got {}", min, max, value));
    return;
  }
  out = value;
}

void JsonFields::integer(std::string_view key, int& out, int min, int max) {
  int64_t v = out;
  integer(key, v, min, max);
  out = static_cast<int>(v);
}

void JsonFields::number(std::string_view key, double& out, double min, double max) {
  const json* v = take(key);
  if (!v) return;
  if (!v->is_number()) {
    return fail(key, fmt::format("must be a number from {} to {}, got {}", min, max, v->dump()));
  }
  const double value = v->get<double>();
  if (!(value >= min && value <= max)) {
    return fail(key, fmt::format("must be a number from {} to {}, got {}", min, max, value));
  }
  out = value;
}

void JsonFields::boolean(std::string_view key, bool& out) {
  const json* v = take(key);
  if (!v) return;
  if (!v->is_boolean()) return fail(key, fmt::format("must be true or false, got {}", v->dump()));
  out = v->get<bool>();
}

void JsonFields::string(std::string_view key, std::string& out, size_t max_length) {
  const json* v = take(key);
  if (!v) return;
  if (!v->is_string()) return fail(key, fmt::format("must be a string, got {}", v->dump()));
  const auto& s = v->get_ref<const std::string&>();
  if (s.size() > max_length) {
    return fail(key, fmt::format("must be at most {} bytes long", max_length));
  }
  out = s;
}

void JsonFields::one_of(std::string_view key, std::string& out,
                        std::initializer_list<std::string_view> allowed) {
  std::string value;
  bool present = object_.is_object() && object_.contains(key);
  string(key, value, 256);
  if (!present || failed_) return;
  for (auto a : allowed) {
    if (a == value) {
      out = value;
      return;
    }
  }
  fail(key, fmt::format("must be one of \"{}\", got \"{}\"", fmt::join(allowed, "\", \""), value));
}

void JsonFields::string_map(std::string_view key, std::map<std::string, std::string>& out) {
  const json* v = take(key);
  if (!v) return;
  if (!v->is_object()) return fail(key, "must be an object of strings");
  std::map<std::string, std::string> result;
  for (auto it = v->begin(); it != v->end(); ++it) {
    if (!it.value().is_string()) {
      return fail(fmt::format("{}.{}", key, it.key()),
                  fmt::format("must be a string, got {}", it.value().dump()));
    }
    result.emplace(it.key(), it.value().get<std::string>());
  }
  out = std::move(result);
}

const json* JsonFields::object(std::string_view key) {
  const json* v = take(key);
  if (!v) return nullptr;
  if (!v->is_object()) {
    fail(key, fmt::format("must be an object, got {}", v->dump()));
    return nullptr;
  }
  return v;
}

const json* JsonFields::array(std::string_view key) {
  const json* v = take(key);
  if (!v) return nullptr;
  if (!v->is_array()) {
    fail(key, fmt::format("must be an array, got {}", v->dump()));
    return nullptr;
  }
  return v;
}

Status JsonFields::finish() {
  if (failed_) return error_;
  for (auto it = object_.begin(); it != object_.end(); ++it) {
    if (!seen_.contains(it.key())) {
      fail(it.key(), "unknown field");
      return error_;
    }
  }
  return {};
}

size_t json_depth(std::string_view text, size_t limit) {
  size_t depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character, whatever it is
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest && (deepest = depth) > limit) return deepest;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

json parse_untrusted(std::string_view text) {
  if (json_depth(text) > kMaxJsonDepth) return json(json::value_t::discarded);
  return json::parse(text, nullptr, /*allow_exceptions=*/false);
}

json json_or_string(std::string_view text) {
  json j = parse_untrusted(text);
  return j.is_discarded() ? json(std::string(text)) : j;
}

bool accept_untrusted(std::string_view text) {
  return json_depth(text) <= kMaxJsonDepth && json::accept(text);
}

Result<json> parse_json(std::string_view text, std::string_view what) {
  if (json_depth(text) > kMaxJsonDepth) {
    return Error::invalid(
        fmt::format("{} nests deeper than {} levels of arrays and objects", what, kMaxJsonDepth));
  }
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded()) return j;
  // Parse again with exceptions only to learn where the syntax error is; the parser's own
  // wording is not for users, the place is.
  size_t byte = 0;
  try {
    json retry = json::parse(text);
    (void)retry;
  } catch (const json::parse_error& e) {
    byte = e.byte;
  } catch (const json::exception&) {
    // Not a syntax error: a number too large for a double (1e400).
    return Error::invalid(fmt::format("{} has a number out of range", what));
  }
  if (byte == 0 || byte > text.size()) {
    return Error::invalid(fmt::format("{} is not valid JSON: it ends before the value does", what));
  }
  size_t line = 1, column = 1;
  for (size_t i = 0; i + 1 < byte; ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) {
      ++column;  // a column is a character: UTF-8 continuation bytes do not count
    }
  }
  return Error::invalid(fmt::format("{} is not valid JSON: unexpected input at line {}, column {}",
                                    what, line, column));
}

}  // namespace ember
