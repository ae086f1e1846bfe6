// Makes the calls a hostile function would make and prints what each one did, one
// "name=result" line per argument: "ok", or the errno name. Calls the policy kills end the
// process with SIGSYS before anything is printed, so run those one per process.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

std::string result(long rc) {
  if (rc >= 0) return "ok";
  switch (errno) {
    case EPERM:
      return "EPERM";
    case EACCES:
      return "EACCES";
    case ENOSYS:
      return "ENOSYS";
    case EROFS:
      return "EROFS";
    case ENOENT:
      return "ENOENT";
    case ENOSPC:
      return "ENOSPC";
    case EMFILE:
      return "EMFILE";
    case EAGAIN:
      return "EAGAIN";
    case ECONNREFUSED:
      return "ECONNREFUSED";
    case ENETUNREACH:
      return "ENETUNREACH";
    case EINVAL:
      return "EINVAL";
    default:
      return "errno" + std::to_string(errno);
  }
}

long connect_tcp(const char* port) {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::atoi(port)));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
}

long connect_unix(const char* path) {
  int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
  return ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
}

// Opens files until it fails; prints how many it got.
std::string open_many() {
  int n = 0;
  while (::open("/dev/null", O_RDONLY) >= 0) ++n;
  return result(-1) + " after " + std::to_string(n);
}

// Writes 64 KiB blocks into /tmp until it fails.
std::string fill_tmp() {
  int fd = ::open("/tmp/fill", O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return result(-1);
  static char block[65536];
  long total = 0;
  ssize_t n;
  while ((n = ::write(fd, block, sizeof block)) > 0) total += n;
  std::string r = result(-1) + " after " + std::to_string(total / 1024) + " KiB";
  ::close(fd);
  ::unlink("/tmp/fill");
  return r;
}

long i386_getpid() {
  long rc;
  // int 0x80 enters the kernel through the 32-bit table, where 20 is getpid.
  asm volatile("int $0x80" : "=a"(rc) : "a"(20) : "memory");
  return rc;
}

std::string run(const std::string& check, const char* arg) {
  if (check == "mount") return result(::mount("none", "/tmp", "tmpfs", 0, nullptr));
  if (check == "umount") return result(::umount2("/proc", MNT_DETACH));
  if (check == "unshare") return result(::unshare(CLONE_NEWUSER));
  if (check == "setns") return result(::setns(::open("/proc/self/ns/uts", O_RDONLY), 0));
  if (check == "chroot") return result(::chroot("/tmp"));
  if (check == "bpf") return result(::syscall(SYS_bpf, 0, nullptr, 0));
  if (check == "keyctl") {
    return result(::syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
  }
  if (check == "add_key") {
    return result(::syscall(SYS_add_key, "user", "k", "v", 1, KEY_SPEC_PROCESS_KEYRING));
  }
  if (check == "io_uring_setup") {
    io_uring_params params{};
    return result(::syscall(SYS_io_uring_setup, 1, &params));
  }
  if (check == "perf_event_open") {
    perf_event_attr attr{};
    attr.size = sizeof attr;
    return result(::syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
  }
  if (check == "userfaultfd") return result(::syscall(SYS_userfaultfd, 0));
  if (check == "clone3") return result(::syscall(SYS_clone3, nullptr, 0));
  if (check == "clone_newuser") {
    long pid = ::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) ::_exit(0);
    return result(pid);
  }
  if (check == "fork") {
    pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    return result(pid);
  }
  if (check == "tiocsti") {
    char c = 'x';
    return result(::ioctl(0, TIOCSTI, &c));
  }
  if (check == "settimeofday") return result(::syscall(SYS_settimeofday, nullptr, nullptr));
  if (check == "clock_settime") {
    timespec ts{};
    return result(::syscall(SYS_clock_settime, CLOCK_REALTIME, &ts));
  }
  if (check == "prlimit") {
    rlimit old{};
    return result(::prlimit(0, RLIMIT_NOFILE, nullptr, &old));
  }
  if (check == "setrlimit") {
    rlimit lim{};
    ::getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = lim.rlim_cur / 2;
    return result(::setrlimit(RLIMIT_NOFILE, &lim));
  }
  if (check == "write_root") return result(::open("/probe", O_WRONLY | O_CREAT, 0600));
  if (check == "write_usr") return result(::open("/usr/probe", O_WRONLY | O_CREAT, 0600));
  if (check == "write_task") return result(::open("/var/task/probe", O_WRONLY | O_CREAT, 0600));
  if (check == "write_etc") return result(::open("/etc/passwd", O_WRONLY | O_APPEND));
  if (check == "write_tmp") return result(::open("/tmp/probe", O_WRONLY | O_CREAT, 0600));
  if (check == "write_proc_sys") {
    return result(::open("/proc/sys/kernel/hostname", O_WRONLY));
  }
  if (check == "open_files") return open_many();
  if (check == "fill_tmp") return fill_tmp();
  if (check == "connect_tcp") return result(connect_tcp(arg));
  if (check == "connect_unix") return result(connect_unix(arg));
  if (check == "kill_all") return result(::kill(-1, SIGKILL));
  // Killed by the policy: nothing is printed.
  if (check == "ptrace") return result(::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr));
  if (check == "process_vm_readv") {
    char buf[8];
    iovec local{buf, sizeof buf}, remote{buf, sizeof buf};
    return result(::syscall(SYS_process_vm_readv, ::getpid(), &local, 1, &remote, 1, 0));
  }
  if (check == "kexec_load") return result(::syscall(SYS_kexec_load, 0, 0, nullptr, ~0ul));
  if (check == "init_module") return result(::syscall(SYS_init_module, nullptr, 0, ""));
  if (check == "reboot") return result(::syscall(SYS_reboot, 0, 0, 0, nullptr));
  if (check == "pidfd_getfd") return result(::syscall(SYS_pidfd_getfd, -1, 0, 0));
  if (check == "kcmp") return result(::syscall(SYS_kcmp, 0, 0, 0, 0, 0));
  if (check == "open_by_handle_at") {
    return result(::syscall(SYS_open_by_handle_at, -1, nullptr, 0));
  }
  if (check == "iopl") return result(::syscall(SYS_iopl, 3));
  if (check == "int80") return i386_getpid() > 0 ? "ok" : "failed";
  return "unknown";
}

}  // namespace

// Usage: sandbox_probe CHECK[=ARG]...
int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string check = argv[i];
    const char* arg = "";
    if (auto eq = check.find('='); eq != std::string::npos) {
      arg = argv[i] + eq + 1;
      check.resize(eq);
    }
    std::string r = run(check, arg);
    std::printf("%s=%s\n", check.c_str(), r.c_str());
    std::fflush(stdout);
  }
  return 0;
}
