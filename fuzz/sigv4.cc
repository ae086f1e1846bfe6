// AWS Signature V4 as the Lambda API checks it (gateway::sigv4): the Authorization header a
// client sends, and the canonical request built from its method, target and headers. Checked: a
// request signed as a client signs it verifies under its secret and under no other.
#include "ember/gateway/sigv4.h"

#include <fuzzer/FuzzedDataProvider.h>

#include <cctype>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

namespace sigv4 = ember::gateway::sigv4;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const std::string header = in.ConsumeRandomLengthString(512);
  const std::string method = in.ConsumeRandomLengthString(8);
  const std::string target = in.ConsumeRandomLengthString(256);
  const std::string date = in.ConsumeRandomLengthString(20);
  std::vector<std::pair<std::string, std::string>> headers;
  for (int i = in.ConsumeIntegralInRange<int>(0, 6); i > 0; --i) {
    std::string name = in.ConsumeRandomLengthString(24);
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    headers.emplace_back(std::move(name), in.ConsumeRandomLengthString(64));
  }
  const std::string body = in.ConsumeRemainingBytesAsString();
  auto auth = sigv4::parse_authorization(header);
  if (!auth) return 0;
  constexpr int64_t kNowMs = 1'796'630'400'000;  // 2026-12-07T08:00:00Z
  // As received: whatever it says is checked without crashing.
  auto as_sent = headers;
  as_sent.emplace_back("x-amz-date", date);
  (void)sigv4::verify({method, target, as_sent, body}, *auth, "secret", kNowMs);

  // A client's request, signed as a client signs it (its scope and headers right, its date
  // now), with the fuzzed method, target, other headers and body: it verifies under the secret
  // it was signed with and under no other.
  std::vector<std::pair<std::string, std::string>> client;
  for (const auto& h : headers) {
    if (h.first != "host" && h.first != "x-amz-date" && h.first != "x-amz-content-sha256") {
      client.push_back(h);
    }
  }
  client.emplace_back("host", "127.0.0.1:8080");
  client.emplace_back("x-amz-date", "20261207T080000Z");
  const sigv4::Request request{method, target, client, body};
  sigv4::Authorization signed_auth = *auth;
  signed_auth.service = "lambda";
  signed_auth.date = "20261207";
  signed_auth.signed_headers = {"host", "x-amz-date"};
  signed_auth.signature = sigv4::signature(request, signed_auth, "secret");
  if (signed_auth.signature.size() != 64) std::abort();
  if (!sigv4::verify(request, signed_auth, "secret", kNowMs)) std::abort();
  if (sigv4::verify(request, signed_auth, "other", kNowMs)) std::abort();
  return 0;
}
