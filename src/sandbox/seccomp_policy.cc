// The syscall deny-list, one line per syscall with the reason. Everything not named here is
// allowed: the runtimes (Node, Python, custom runtimes) use a broad and changing set of calls,
// so an allow-list would break them with every upgrade; what is denied is what no function
// needs and what attacks the kernel or escapes the sandbox.
#include "ember/sandbox/seccomp.h"

namespace ember::sandbox {

const std::vector<SyscallRule>& syscall_rules() {
  static const std::vector<SyscallRule> rules = {
      // Killed: no function has a reason to call these.
      {"kexec_load", Verdict::kKill, "replaces the running kernel"},
      {"kexec_file_load", Verdict::kKill, "replaces the running kernel"},
      {"init_module", Verdict::kKill, "loads code into the kernel"},
      {"finit_module", Verdict::kKill, "loads code into the kernel"},
      {"delete_module", Verdict::kKill, "unloads kernel code"},
      {"reboot", Verdict::kKill, "stops the machine"},
      {"swapon", Verdict::kKill, "changes the host's swap"},
      {"swapoff", Verdict::kKill, "changes the host's swap"},
      {"iopl", Verdict::kKill, "raw I/O port access"},
      {"ioperm", Verdict::kKill, "raw I/O port access"},
      {"ptrace", Verdict::kKill, "reads and writes the memory of other processes"},
      {"process_vm_readv", Verdict::kKill, "reads the memory of other processes"},
      {"process_vm_writev", Verdict::kKill, "writes the memory of other processes"},
      {"pidfd_getfd", Verdict::kKill, "steals descriptors from other processes"},
      {"kcmp", Verdict::kKill, "probes the kernel objects of other processes"},
      {"open_by_handle_at", Verdict::kKill, "opens files outside the mount namespace (shocker)"},
      // EPERM: programs probe some of these and carry on without them.
      {"mount", Verdict::kErrno, "changes mounts"},
      {"umount2", Verdict::kErrno, "changes mounts"},
      {"pivot_root", Verdict::kErrno, "changes the root"},
      {"chroot", Verdict::kErrno, "changes the root"},
      {"move_mount", Verdict::kErrno, "changes mounts (new mount API)"},
      {"open_tree", Verdict::kErrno, "clones mounts (new mount API)"},
      {"fsopen", Verdict::kErrno, "creates mounts (new mount API)"},
      {"fsconfig", Verdict::kErrno, "configures mounts (new mount API)"},
      {"fsmount", Verdict::kErrno, "creates mounts (new mount API)"},
      {"fspick", Verdict::kErrno, "reconfigures mounts (new mount API)"},
      {"mount_setattr", Verdict::kErrno, "changes mount flags"},
      {"unshare", Verdict::kErrno, "new namespaces: the way to regain capabilities"},
      {"setns", Verdict::kErrno, "joins other namespaces"},
      {"bpf", Verdict::kErrno, "loads programs into the kernel"},
      {"perf_event_open", Verdict::kErrno, "kernel and hardware side channels"},
      {"userfaultfd", Verdict::kErrno, "stalls the kernel mid-copy, a common exploit primitive"},
      {"add_key", Verdict::kErrno, "the kernel keyring is not namespaced"},
      {"request_key", Verdict::kErrno, "the kernel keyring is not namespaced"},
      {"keyctl", Verdict::kErrno, "the kernel keyring is not namespaced"},
      {"io_uring_setup", Verdict::kErrno, "bypasses seccomp for the calls it queues"},
      {"io_uring_enter", Verdict::kErrno, "bypasses seccomp for the calls it queues"},
      {"io_uring_register", Verdict::kErrno, "bypasses seccomp for the calls it queues"},
      {"settimeofday", Verdict::kErrno, "sets the host clock"},
      {"clock_settime", Verdict::kErrno, "sets the host clock"},
      {"clock_adjtime", Verdict::kErrno, "sets the host clock"},
      {"adjtimex", Verdict::kErrno, "sets the host clock"},
      {"acct", Verdict::kErrno, "process accounting of the host"},
      {"quotactl", Verdict::kErrno, "disk quotas of the host"},
      {"syslog", Verdict::kErrno, "reads the kernel log"},
      {"name_to_handle_at", Verdict::kErrno, "the other half of open_by_handle_at"},
      // ENOSYS: clone3 passes its flags in memory, where seccomp cannot see namespace flags;
      // glibc and Node fall back to clone, whose flags are checked below.
      {"clone3", Verdict::kEnosys, "flags out of seccomp's sight; callers fall back to clone"},
  };
  return rules;
}

}  // namespace ember::sandbox
