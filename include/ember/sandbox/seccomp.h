// The seccomp policy of every worker: a deny-list kept as data (seccomp_policy.cc, one line and
// one reason per syscall), compiled once at start-up by libseccomp into a BPF program that the
// spawner loads in each worker just before execve.
#pragma once

#include <linux/filter.h>

#include <string>
#include <vector>

#include "ember/common/result.h"

namespace ember::sandbox {

enum class Verdict {
  kKill,    // the process dies with SIGSYS: only an attack or a broken program asks for these
  kErrno,   // fails with EPERM: legitimate programs probe these and cope
  kEnosys,  // fails with ENOSYS: callers fall back to an older call
};

struct SyscallRule {
  const char* name;
  Verdict verdict;
  const char* why;
};

// The deny-list; every other syscall is allowed (and prlimit64/setrlimit always are).
const std::vector<SyscallRule>& syscall_rules();

// A compiled filter, ready for SECCOMP_SET_MODE_FILTER.
struct SeccompProgram {
  std::vector<sock_filter> instructions;
  size_t rules = 0;                  // rules compiled
  std::vector<std::string> skipped;  // names this architecture does not have
  sock_fprog fprog() const {
    return sock_fprog{static_cast<unsigned short>(instructions.size()),
                      const_cast<sock_filter*>(instructions.data())};
  }
};

// Compiles the policy for the native architecture; any other architecture is killed.
Result<SeccompProgram> compile_seccomp();

}  // namespace ember::sandbox
