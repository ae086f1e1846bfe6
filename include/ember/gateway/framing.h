// HTTP/1.1 message framing as RFC 9112 requires of a server that may sit behind a proxy. Beast
// parses the bytes; these checks refuse what Beast accepts but a proxy in front could read
// differently (obs-fold, bare CR or LF, Transfer-Encoding codings other than a final chunked,
// Transfer-Encoding beside Content-Length), so that no request can be smuggled past one.
#pragma once

#include <boost/system/error_code.hpp>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "ember/gateway/http.h"

namespace ember::gateway {

// Why a request is refused before routing. The connection is closed after the answer: where
// the next request would start is not known.
struct FramingError {
  http::status status = http::status::bad_request;
  std::string message;
};

// Finds the end of a request's header section (its empty line) in bytes that arrive a piece at
// a time, refusing bare CR, bare LF and obs-fold on the way. Each call resumes where the last
// one stopped, so a header sent a byte at a time costs linear time.
class HeaderScanner {
 public:
  struct Result {
    std::optional<size_t> end;  // offset just past the empty line; nullopt while more is needed
    std::optional<FramingError> error;
  };
  // `bytes` starts at the request line and extends what the previous call saw.
  Result scan(std::string_view bytes);

 private:
  size_t pos_ = 0;         // first byte not yet looked at
  size_t line_start_ = 0;  // start of the line holding pos_
};

// Checks a parsed request header: Host, and how the body is delimited.
std::optional<FramingError> check_framing(const RequestHeader& header);

// Words for a Beast parse error, for the client and the log, without the library's own names.
std::string describe_parse_error(const boost::system::error_code& ec);

}  // namespace ember::gateway
