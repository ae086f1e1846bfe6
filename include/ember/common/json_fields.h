// Strict reading of JSON objects for configuration files, manifests and request bodies.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>

#include "ember/common/result.h"

namespace ember {

// Reads the fields of one JSON object. Each getter consumes its key and leaves the output
// untouched when the key is absent (so outputs hold defaults). The first error wins and later
// calls do nothing; finish() reports it, or else the first key no getter asked for. Error
// messages and Error::field carry the dotted path of the bad field ("limits.max_connections").
class JsonFields {
 public:
  // `prefix` is the path of `object` itself, empty for the document root.
  JsonFields(const nlohmann::json& object, std::string prefix);

  void integer(std::string_view key, int64_t& out, int64_t min, int64_t max);
  void integer(std::string_view key, int& out, int min, int max);
  void number(std::string_view key, double& out, double min, double max);
  void boolean(std::string_view key, bool& out);
  void string(std::string_view key, std::string& out, size_t max_length = 4096);
  void one_of(std::string_view key, std::string& out,
              std::initializer_list<std::string_view> allowed);
  void string_map(std::string_view key, std::map<std::string, std::string>& out);
  // Returns the nested object at `key`, nullptr when absent or not an object (then an error).
  const nlohmann::json* object(std::string_view key);
  // Returns the array at `key`, nullptr when absent or not an array (then an error).
  const nlohmann::json* array(std::string_view key);
  // Records an error for `key` found by a check outside this class.
  void fail(std::string_view key, std::string_view what);

  bool ok() const { return !failed_; }
  std::string path(std::string_view key) const;
  Status finish();

 private:
  const nlohmann::json* take(std::string_view key);

  const nlohmann::json& object_;
  std::string prefix_;
  std::set<std::string, std::less<>> seen_;
  bool failed_ = false;
  Error error_;
};

// JSON from outside (clients, bundles, functions) may nest at most this deep. Reading and writing
// a document recurses once per level, so without a bound a few hundred kilobytes of brackets
// would exhaust the stack; real documents nest a few dozen levels.
inline constexpr size_t kMaxJsonDepth = 1000;

// How deep `text` nests (the most arrays and objects open at once; 0 for a scalar), counted
// without parsing, strings skipped; counting stops just past `limit`. Says nothing of validity.
size_t json_depth(std::string_view text, size_t limit = kMaxJsonDepth);

// json::parse(text, nullptr, false) for text from outside: discarded, as for invalid JSON, when it
// nests deeper than kMaxJsonDepth.
nlohmann::json parse_untrusted(std::string_view text);
// parse_untrusted, or the text itself as a JSON string when it is not JSON (or too deep): for
// showing stored text that ought to be JSON inside a document of Ember's own.
nlohmann::json json_or_string(std::string_view text);
// json::accept for text from outside: false as well when it nests deeper than kMaxJsonDepth.
bool accept_untrusted(std::string_view text);

// Parses `text` as a JSON document; a syntax error, or nesting past kMaxJsonDepth, becomes
// Errc::kInvalid naming `what`.
Result<nlohmann::json> parse_json(std::string_view text, std::string_view what);

}  // namespace ember
