// The `ember` command's HTTP client: one request per connection to emberd, over its Unix socket
// (no token) or over TCP with the admin token, as docs/api.md describes the two transports.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "ember/common/result.h"

namespace ember::cli {

// Where emberd is and how to prove the caller may use it.
struct Endpoint {
  std::string socket;  // a Unix socket path; used when `host` is empty
  std::string host;    // TCP: host and port of an http:// URL
  std::string port;
  std::string token;  // sent as a bearer token over TCP
  std::string describe() const;
};

// Reads an http://HOST[:PORT] URL into `host` and `port` (80 by default). Only plain HTTP: a
// remote emberd sits behind a TLS-terminating proxy on the same host or network.
Status parse_url(std::string_view url, Endpoint& endpoint);

struct Reply {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string header(const std::string& name) const;
};

using Headers = std::vector<std::pair<std::string, std::string>>;
// Called while a body is sent, with the bytes sent so far and the total.
using Progress = std::function<void(uint64_t sent, uint64_t total)>;
// Called with each piece of a streamed answer as it arrives; false stops reading.
using PieceSink = std::function<bool(std::string_view piece)>;

class Client {
 public:
  explicit Client(Endpoint endpoint) : endpoint_(std::move(endpoint)) {}

  // One request and its whole answer. An Error only when emberd could not be reached or the
  // connection broke; an HTTP error status is a Reply.
  Result<Reply> request(std::string_view method, const std::string& target,
                        const std::string& body = {}, const Headers& headers = {},
                        const Progress& progress = {}) const;
  // A request whose answer is read as it arrives (logs?follow=1): `sink` gets each piece of the
  // body; the Reply holds the status and headers, and the body only when the status is not 200.
  Result<Reply> stream(std::string_view method, const std::string& target,
                       const PieceSink& sink) const;

  const Endpoint& endpoint() const { return endpoint_; }

 private:
  Endpoint endpoint_;
};

}  // namespace ember::cli
