// AWS Signature Version 4 as a server checks it, for the Lambda API (docs/lambda.md): the
// Authorization header form, with the canonical request built from the request exactly as it
// arrived (the path still percent-encoded, then encoded again, as AWS does for every service but
// S3). Only the header form is accepted; presigned query strings are not.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ember/common/result.h"

namespace ember::gateway::sigv4 {

// What the Authorization header says.
struct Authorization {
  std::string access_key_id;
  std::string date;                         // yyyymmdd of the credential scope
  std::string region;                       // of the scope: the client's configured region
  std::string service;                      // of the scope: "lambda"
  std::vector<std::string> signed_headers;  // lower-case, in the order given
  std::string signature;                    // 64 lower-case hex digits
};

struct Request {
  std::string_view method;
  std::string_view target;  // as received: path and query, percent-encoded
  // Every header as received, names in lower case; a repeated header appears once per line.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string_view body;
};

// Errors carry Lambda's error type in Error::field: IncompleteSignatureException for a header
// that is not a complete SigV4 authorization, InvalidSignatureException for a signature that
// does not match or a date outside the allowed skew.
Result<Authorization> parse_authorization(std::string_view header);

// The canonical request of AWS's specification, and the string to sign of `request`.
std::string canonical_request(const Request& request, const Authorization& auth,
                              std::string_view payload_hash);
std::string string_to_sign(std::string_view amz_date, const Authorization& auth,
                           std::string_view canonical);
// The signature `secret` gives `request` (what a client computes).
std::string signature(const Request& request, const Authorization& auth, std::string_view secret);

// Checks `request`, whose Authorization header parsed as `auth`, against `secret`: the scope is
// for service "lambda", x-amz-date and host are signed, the date is within `skew` of `now_ms`,
// a signed x-amz-content-sha256 matches the body, and the signature matches.
Status verify(const Request& request, const Authorization& auth, std::string_view secret,
              int64_t now_ms, std::chrono::seconds skew = std::chrono::minutes(5));

}  // namespace ember::gateway::sigv4
