// A small blocking HTTP/1.1 client for e2e tests, over TCP or a Unix socket.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace ember::testing {

struct HttpResponse {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
  nlohmann::json json() const { return nlohmann::json::parse(body); }
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

using Headers = std::map<std::string, std::string>;

// One request per connection; the server's answer, or status 0 when the connection broke.
HttpResponse http_request(uint16_t port, const std::string& method, const std::string& target,
                          const std::string& body = "", const Headers& headers = {});
HttpResponse unix_request(const std::filesystem::path& socket, const std::string& method,
                          const std::string& target, const std::string& body = "",
                          const Headers& headers = {});

// Sends raw bytes on a fresh TCP connection and returns everything the server sends until it
// closes the connection or `timeout_ms` passes.
// `closed` tells whether the server closed the connection (rather than the wait running out).
std::string raw_exchange(uint16_t port, const std::string& bytes, int timeout_ms = 5000,
                         bool* closed = nullptr);

// A loopback TCP port nothing listens on now (the kernel's pick for a socket bound to port 0),
// for a server the test starts itself.
int free_port();

}  // namespace ember::testing
