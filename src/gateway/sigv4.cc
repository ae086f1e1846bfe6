#include "ember/gateway/sigv4.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <optional>

#include "ember/common/clock.h"
#include "ember/common/crypto.h"

namespace ember::gateway::sigv4 {

namespace {

constexpr std::string_view kAlgorithm = "AWS4-HMAC-SHA256";

Error incomplete(std::string message) {
  return Error::invalid(std::move(message), "IncompleteSignatureException");
}
Error invalid_signature(std::string message) {
  return Error::invalid(std::move(message), "InvalidSignatureException");
}

bool unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}

std::string uri_encode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (unreserved(c)) {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decoding of a query component; '+' stays a plus, as AWS reads it.
std::string uri_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string trimmed_collapsed(std::string_view v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

// The path, each segment encoded again; the query, decoded, encoded and sorted.
std::pair<std::string, std::string> canonical_target(std::string_view target) {
  const size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
  std::string uri;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    std::string_view seg =
        path.substr(start, slash == std::string_view::npos ? slash : slash - start);
    if (start > 0) uri += '/';
    uri += uri_encode(seg);
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  if (uri.empty()) uri = "/";
  std::vector<std::pair<std::string, std::string>> pairs;
  size_t pos = 0;
  while (pos < query.size()) {
    size_t amp = query.find('&', pos);
    std::string_view item = query.substr(pos, amp == std::string_view::npos ? amp : amp - pos);
    if (!item.empty()) {
      size_t eq = item.find('=');
      std::string key(item.substr(0, eq));
      std::string value(eq == std::string_view::npos ? std::string_view() : item.substr(eq + 1));
      pairs.emplace_back(uri_encode(uri_decode(key)), uri_encode(uri_decode(value)));
    }
    if (amp == std::string_view::npos) break;
    pos = amp + 1;
  }
  std::sort(pairs.begin(), pairs.end());
  std::string canonical_query;
  for (const auto& [k, v] : pairs) {
    if (!canonical_query.empty()) canonical_query += '&';
    canonical_query += k + "=" + v;
  }
  return {uri, canonical_query};
}

std::string header_value(const Request& r, std::string_view name) {
  std::string joined;
  bool found = false;
  for (const auto& [n, v] : r.headers) {
    if (n != name) continue;
    if (found) joined += ',';
    joined += trimmed_collapsed(v);
    found = true;
  }
  return joined;
}

bool has_header(const Request& r, std::string_view name) {
  return std::any_of(r.headers.begin(), r.headers.end(),
                     [&](const auto& h) { return h.first == name; });
}

std::string signing_key(std::string_view secret, const Authorization& a) {
  std::string k = hmac_sha256(std::string("AWS4") + std::string(secret), a.date);
  k = hmac_sha256(k, a.region);
  k = hmac_sha256(k, a.service);
  return hmac_sha256(k, "aws4_request");
}

// Seconds since the epoch of "yyyymmddThhmmssZ".
std::optional<int64_t> parse_amz_date(std::string_view s) {
  if (s.size() != 16 || s[8] != 'T' || s[15] != 'Z') return std::nullopt;
  for (size_t i : {0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14}) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
  }
  auto num = [&](size_t at, size_t n) { return std::stoi(std::string(s.substr(at, n))); };
  std::tm tm{};
  tm.tm_year = num(0, 4) - 1900;
  tm.tm_mon = num(4, 2) - 1;
  tm.tm_mday = num(6, 2);
  tm.tm_hour = num(9, 2);
  tm.tm_min = num(11, 2);
  tm.tm_sec = num(13, 2);
  if (tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
      tm.tm_sec > 60) {
    return std::nullopt;
  }
  return static_cast<int64_t>(::timegm(&tm));
}

std::string format_amz_date(int64_t seconds) { return format_utc(seconds, "%Y%m%dT%H%M%SZ"); }

}  // namespace

Result<Authorization> parse_authorization(std::string_view header) {
  if (!header.starts_with(kAlgorithm) || header.size() == kAlgorithm.size() ||
      header[kAlgorithm.size()] != ' ') {
    return incomplete("Authorization header requires the AWS4-HMAC-SHA256 algorithm");
  }
  header.remove_prefix(kAlgorithm.size() + 1);
  Authorization a;
  std::string credential, signed_headers;
  while (!header.empty()) {
    size_t comma = header.find(',');
    std::string part = trimmed_collapsed(header.substr(0, comma));
    header = comma == std::string_view::npos ? std::string_view() : header.substr(comma + 1);
    size_t eq = part.find('=');
    if (eq == std::string::npos) continue;
    std::string key = part.substr(0, eq), value = part.substr(eq + 1);
    if (key == "Credential") credential = value;
    if (key == "SignedHeaders") signed_headers = value;
    if (key == "Signature") a.signature = value;
  }
  std::vector<std::string> scope;
  for (size_t pos = 0;;) {
    size_t slash = credential.find('/', pos);
    scope.push_back(credential.substr(pos, slash == std::string::npos ? slash : slash - pos));
    if (slash == std::string::npos) break;
    pos = slash + 1;
  }
  if (credential.empty() || scope.size() != 5 || scope[4] != "aws4_request" ||
      scope[1].size() != 8 || signed_headers.empty() || a.signature.size() != 64) {
    return incomplete(
        "Authorization header requires Credential=ID/DATE/REGION/SERVICE/aws4_request, "
        "SignedHeaders and Signature");
  }
  a.access_key_id = scope[0];
  a.date = scope[1];
  a.region = scope[2];
  a.service = scope[3];
  for (size_t pos = 0;;) {
    size_t semi = signed_headers.find(';', pos);
    a.signed_headers.push_back(
        signed_headers.substr(pos, semi == std::string::npos ? semi : semi - pos));
    if (semi == std::string::npos) break;
    pos = semi + 1;
  }
  return a;
}

std::string canonical_request(const Request& r, const Authorization& a,
                              std::string_view payload_hash) {
  auto [uri, query] = canonical_target(r.target);
  std::string headers, names;
  for (const auto& name : a.signed_headers) {
    headers += name + ":" + header_value(r, name) + "\n";
    if (!names.empty()) names += ';';
    names += name;
  }
  return fmt::format("{}\n{}\n{}\n{}\n{}\n{}", r.method, uri, query, headers, names, payload_hash);
}

std::string string_to_sign(std::string_view amz_date, const Authorization& a,
                           std::string_view canonical) {
  return fmt::format("{}\n{}\n{}/{}/{}/aws4_request\n{}", kAlgorithm, amz_date, a.date, a.region,
                     a.service, sha256_hex(canonical));
}

std::string signature(const Request& r, const Authorization& a, std::string_view secret) {
  std::string payload = header_value(r, "x-amz-content-sha256");
  if (payload.empty()) payload = sha256_hex(r.body);
  const std::string canonical = canonical_request(r, a, payload);
  return hex(hmac_sha256(signing_key(secret, a),
                         string_to_sign(header_value(r, "x-amz-date"), a, canonical)));
}

Status verify(const Request& r, const Authorization& a, std::string_view secret, int64_t now_ms,
              std::chrono::seconds skew) {
  if (a.service != "lambda") {
    return invalid_signature(
        fmt::format("Credential should be scoped to correct service: "
                    "'lambda', not '{}'",
                    a.service));
  }
  auto signs = [&](std::string_view n) {
    return std::find(a.signed_headers.begin(), a.signed_headers.end(), n) != a.signed_headers.end();
  };
  if (!signs("host") || !signs("x-amz-date")) {
    return incomplete("SignedHeaders must include host and x-amz-date");
  }
  for (const auto& name : a.signed_headers) {
    if (!has_header(r, name)) return invalid_signature("signed header " + name + " is missing");
  }
  const std::string amz_date = header_value(r, "x-amz-date");
  auto when = parse_amz_date(amz_date);
  if (!when || amz_date.substr(0, 8) != a.date) {
    return invalid_signature("X-Amz-Date must be yyyymmddThhmmssZ of the credential's date");
  }
  const int64_t now = now_ms / 1000;
  const int64_t window = skew.count();
  if (*when < now - window) {
    return invalid_signature(
        fmt::format("Signature expired: {} is now earlier than {} ({} - {} min.)", amz_date,
                    format_amz_date(now - window), format_amz_date(now), window / 60));
  }
  if (*when > now + window) {
    return invalid_signature(
        fmt::format("Signature not yet current: {} is still later than {} "
                    "({} + {} min.)",
                    amz_date, format_amz_date(now + window), format_amz_date(now), window / 60));
  }
  const std::string body_hash = sha256_hex(r.body);
  if (has_header(r, "x-amz-content-sha256") &&
      header_value(r, "x-amz-content-sha256") != body_hash) {
    return invalid_signature("x-amz-content-sha256 does not match the body");
  }
  if (!constant_time_equal(signature(r, a, secret), a.signature)) {
    return invalid_signature(
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method.");
  }
  return {};
}

}  // namespace ember::gateway::sigv4
