// GET /console/...: the web console's files.
#include "console.h"

namespace ember::gateway {

namespace {

std::string_view content_type(std::string_view path) {
  auto ends = [path](std::string_view ext) {
    return path.size() >= ext.size() && path.substr(path.size() - ext.size()) == ext;
  };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  return "application/octet-stream";
}

}  // namespace

Response console_response(std::string_view path, std::string_view if_none_match) {
  if (path.empty() || path == "/") path = "/index.html";
  const ConsoleFile* found = nullptr;
  for (const ConsoleFile& f : console_files()) {
    if (path.substr(1) == f.path) found = &f;
  }
  if (!found) {
    return error_response(http::status::not_found, "not_found",
                          "the console has no file " + std::string(path));
  }
  Response res{if_none_match == found->etag ? http::status::not_modified : http::status::ok, 11};
  res.set(http::field::server, "ember");
  res.set(http::field::etag, found->etag);
  // Revalidated on each load, so a new emberd's console is never mixed with an old one's.
  res.set(http::field::cache_control, "no-cache");
  // Only the console's own files and API requests to this daemon; no inline script, no frame.
  res.set("Content-Security-Policy",
          "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
  res.set("X-Content-Type-Options", "nosniff");
  // A page of another origin that opened the console keeps no handle on it.
  res.set("Cross-Origin-Opener-Policy", "same-origin");
  res.set("Referrer-Policy", "no-referrer");
  if (res.result() == http::status::not_modified) return res;
  res.set(http::field::content_type, content_type(found->path));
  res.body().assign(reinterpret_cast<const char*>(found->data), found->size);
  return res;
}

}  // namespace ember::gateway
