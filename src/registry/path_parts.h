// Splitting slash-separated paths from bundles and manifests, without touching the filesystem.
#pragma once

#include <string_view>
#include <vector>

namespace ember::registry {

// The components of `path` between slashes, in order, empty ones included ("a//b" gives "a",
// "", "b"), so callers decide what an empty or "." component means.
inline std::vector<std::string_view> path_parts(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    parts.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

}  // namespace ember::registry
