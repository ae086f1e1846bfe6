#include "ember/gateway/framing.h"

#include <boost/beast/core/string.hpp>
#include <vector>

namespace ember::gateway {

namespace {

FramingError bad(std::string message) {
  return FramingError{http::status::bad_request, std::move(message)};
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The transfer codings of every Transfer-Encoding field line, in order (RFC 9110 §5.3: several
// lines are one comma-separated list). Empty list elements are ignored, as §5.6.1 allows.
std::vector<std::string_view> transfer_codings(const RequestHeader& header) {
  std::vector<std::string_view> codings;
  auto [first, last] = header.equal_range(http::field::transfer_encoding);
  for (auto it = first; it != last; ++it) {
    std::string_view list = it->value();
    while (true) {
      const size_t comma = list.find(',');
      std::string_view element = trim(list.substr(0, comma));
      if (!element.empty()) codings.push_back(element);
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
  }
  return codings;
}

}  // namespace

HeaderScanner::Result HeaderScanner::scan(std::string_view bytes) {
  for (; pos_ < bytes.size(); ++pos_) {
    const char c = bytes[pos_];
    if (c == '\n') return {std::nullopt, bad("a line of the request header ends in LF alone")};
    if (pos_ == line_start_ && pos_ > 0 && (c == ' ' || c == '\t')) {
      // After the request line, a line that starts with whitespace is obs-fold (or whitespace
      // before the first field): RFC 9112 §5.2 and §2.2 let a server refuse both.
      return {std::nullopt, bad("the request header uses obsolete line folding")};
    }
    if (c != '\r') continue;
    if (pos_ + 1 == bytes.size()) break;  // the LF has not arrived yet
    if (bytes[pos_ + 1] != '\n') {
      return {std::nullopt, bad("the request header has a CR that is not followed by LF")};
    }
    if (pos_ == line_start_ && pos_ > 0) return {pos_ + 2, std::nullopt};  // the empty line
    ++pos_;
    line_start_ = pos_ + 1;
  }
  return {};
}

std::optional<FramingError> check_framing(const RequestHeader& header) {
  // Beast accepts HTTP/1.0 and 1.1 only and answers any other version as a bad request line.
  const unsigned version = header.version();
  const auto hosts = header.count(http::field::host);
  if (hosts > 1) return bad("the request has more than one Host header");
  if (hosts == 0 && version >= 11) return bad("an HTTP/1.1 request needs a Host header");

  if (header.count(http::field::transfer_encoding) == 0) return std::nullopt;
  // RFC 9112 §6.1: with HTTP/1.0 the framing is faulty; beside Content-Length it is ambiguous;
  // unless chunked comes last (and once), the body's length cannot be known.
  if (version < 11) return bad("Transfer-Encoding is not allowed in an HTTP/1.0 request");
  if (header.count(http::field::content_length) > 0) {
    return bad("a request may not have both Transfer-Encoding and Content-Length");
  }
  const auto codings = transfer_codings(header);
  if (codings.empty()) return bad("Transfer-Encoding is empty");
  if (!boost::beast::iequals(codings.back(), "chunked")) {
    return bad("the final transfer coding of the request is not chunked");
  }
  for (size_t i = 0; i + 1 < codings.size(); ++i) {
    if (boost::beast::iequals(codings[i], "chunked")) {
      return bad("the request applies the chunked transfer coding more than once");
    }
  }
  if (codings.size() > 1) {
    // Valid framing, but a coding this server cannot decode (RFC 9112 §6.1: 501).
    return FramingError{http::status::not_implemented,
                        "transfer coding \"" + std::string(codings.front()) +
                            "\" is not supported; send the body with chunked alone"};
  }
  return std::nullopt;
}

std::string describe_parse_error(const boost::system::error_code& ec) {
  using E = http::error;
  if (ec == E::bad_line_ending) return "a line of the request does not end in CRLF";
  if (ec == E::bad_method) return "the request line has an invalid method";
  if (ec == E::bad_target) return "the request line has an invalid target";
  if (ec == E::bad_version) return "the request line has an invalid HTTP version";
  if (ec == E::bad_field) return "a header field name is invalid";
  if (ec == E::bad_value) return "a header field value is invalid";
  if (ec == E::bad_content_length) return "Content-Length is invalid or conflicts with chunked";
  if (ec == E::multiple_content_length) return "the request has differing Content-Length values";
  if (ec == E::bad_transfer_encoding) return "Transfer-Encoding is repeated or conflicts";
  if (ec == E::bad_chunk) return "a chunk of the request body is malformed";
  if (ec == E::bad_chunk_extension) return "a chunk extension of the request body is malformed";
  if (ec == E::bad_obs_fold) return "the request header uses obsolete line folding";
  return "the request cannot be parsed";
}

}  // namespace ember::gateway
