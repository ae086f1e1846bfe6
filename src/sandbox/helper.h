// The spawner helper: a single-threaded process forked from the daemon before any thread exists.
// It serves spawn and network-namespace requests on its socket, one at a time, creating each
// worker with clone3 (the child side is child.h), and kills every worker it started when the
// daemon's end of the socket closes.
#pragma once

#include <sys/types.h>

#include "ember/sandbox/spawner.h"

namespace ember::sandbox::helper {

// Serves `sock` until the daemon closes its end; never returns. A zygote passes its `entry`.
[[noreturn]] void helper_main(int sock, pid_t daemon_pid, const Confinement& confinement,
                              const ChildEntry* entry = nullptr);

}  // namespace ember::sandbox::helper
