// A directory of a fuzz target's own for the state it writes: on /dev/shm when there is one, as
// the stores fsync every commit, else in /tmp. Aborts when neither can be made.
#pragma once

#include <stdlib.h>

#include <cstdlib>
#include <string>

namespace ember::fuzz {

inline std::string scratch_dir(const std::string& name) {
  for (const char* parent : {"/dev/shm", "/tmp"}) {
    std::string tmpl = std::string(parent) + "/ember-fuzz-" + name + "-XXXXXX";
    if (::mkdtemp(tmpl.data())) return tmpl;
  }
  std::abort();
}

}  // namespace ember::fuzz
