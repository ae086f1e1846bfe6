#include "ember/sandbox/seccomp.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "ember/os/unique_fd.h"

namespace ember::sandbox {

namespace {

struct ContextDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};

uint32_t action(Verdict v) {
  switch (v) {
    case Verdict::kKill:
      return SCMP_ACT_KILL_PROCESS;
    case Verdict::kErrno:
      return SCMP_ACT_ERRNO(EPERM);
    case Verdict::kEnosys:
      return SCMP_ACT_ERRNO(ENOSYS);
  }
  return SCMP_ACT_KILL_PROCESS;
}

Error seccomp_error(std::string_view what, int rc) {
  return Error::system("seccomp", std::string(what), -rc);
}

}  // namespace

Result<SeccompProgram> compile_seccomp() {
  std::unique_ptr<void, ContextDeleter> ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (!ctx) return Error::system("seccomp_init", "", ENOMEM);
  // A syscall made through another architecture's entry point (int 0x80, x32) would dodge
  // every rule below, whose numbers are the native ones.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)) {
    return seccomp_error("set bad-architecture action", rc);
  }
  // no_new_privs is set by the spawner itself, in the order the kernel requires.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0)) {
    return seccomp_error("clear no_new_privs attribute", rc);
  }

  SeccompProgram program;
  for (const auto& rule : syscall_rules()) {
    int nr = seccomp_syscall_resolve_name(rule.name);
    if (nr == __NR_SCMP_ERROR || nr < 0) {
      program.skipped.emplace_back(rule.name);
      continue;
    }
    if (int rc = seccomp_rule_add(ctx.get(), action(rule.verdict), nr, 0)) {
      return seccomp_error(rule.name, rc);
    }
    ++program.rules;
  }
  // clone with any namespace flag: a new user namespace gives back every capability inside it.
  for (uint64_t flag : {CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER,
                        CLONE_NEWPID, CLONE_NEWNET}) {
    if (int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                                  SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag))) {
      return seccomp_error("clone namespace flags", rc);
    }
    ++program.rules;
  }
  // Terminal injection into whatever terminal the daemon was started from. ioctl's request is
  // an int: only its low 32 bits count.
  for (uint64_t request : {static_cast<uint64_t>(TIOCSTI), static_cast<uint64_t>(TIOCLINUX)}) {
    if (int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                                  SCMP_A1(SCMP_CMP_MASKED_EQ, 0xFFFFFFFFu, request))) {
      return seccomp_error("ioctl TIOCSTI/TIOCLINUX", rc);
    }
    ++program.rules;
  }

  // The parent-death signal the spawner armed is what kills a worker with the daemon; function
  // code may not clear or change it. prctl's option is an int: only its low 32 bits count.
  if (int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(prctl), 1,
                                SCMP_A0(SCMP_CMP_MASKED_EQ, 0xFFFFFFFFu, PR_SET_PDEATHSIG))) {
    return seccomp_error("prctl PR_SET_PDEATHSIG", rc);
  }
  ++program.rules;

  // libseccomp 2.5 exports only to a descriptor.
  os::UniqueFd memfd(::memfd_create("ember-seccomp", MFD_CLOEXEC));
  if (!memfd) return Error::system("memfd_create", "seccomp", errno);
  if (int rc = seccomp_export_bpf(ctx.get(), memfd.get())) return seccomp_error("export", rc);
  off_t size = ::lseek(memfd.get(), 0, SEEK_END);
  if (size <= 0 || size % sizeof(sock_filter) != 0) {
    return Error::system("export", "seccomp", EINVAL);
  }
  program.instructions.resize(static_cast<size_t>(size) / sizeof(sock_filter));
  if (::pread(memfd.get(), program.instructions.data(), static_cast<size_t>(size), 0) != size) {
    return Error::system("read", "seccomp program", errno);
  }
  return program;
}

}  // namespace ember::sandbox
