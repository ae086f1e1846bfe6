// What `ember deploy` uploads: a bundle file as it is, or a folder packed as a tar.gz in memory.
#pragma once

#include <string>

#include "ember/common/result.h"

namespace ember::cli {

// The bytes of a .zip or .tar.gz file, or of `path` (a folder) packed as a tar.gz: its regular
// files, folders and symbolic links, with their modes, paths relative to the folder, `.git`
// left out, in path order and without times, so the same contents give the same bytes. Errors
// name the path at fault.
Result<std::string> read_bundle(const std::string& path);

}  // namespace ember::cli
