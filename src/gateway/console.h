// The web console: static files under /console/, built into the binary from console/
// (cmake/EmbedFiles.cmake), served with a strict Content-Security-Policy. The page holds no
// secret: it asks for the admin token and sends it on each API request, as curl would.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

#include "ember/gateway/http.h"

namespace ember::gateway {

struct ConsoleFile {
  std::string_view path;  // relative to console/, e.g. "app.js" or "vendor/uplot/uPlot.min.css"
  const unsigned char* data;
  size_t size;
  std::string_view etag;  // quoted: a hash of the bytes, computed when they were embedded
};

// Every file of console/ (generated).
std::span<const ConsoleFile> console_files();

// The answer to a GET of `path` below /console: "" and "/" are index.html; an unknown file is
// 404. `if_none_match` is the request's If-None-Match (an unchanged file is 304).
Response console_response(std::string_view path, std::string_view if_none_match);

}  // namespace ember::gateway
