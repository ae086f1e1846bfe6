// Workers in the full sandbox: namespaces, the pivoted root, the dropped identity and the
// seccomp policy, checked from inside by a shell and by a probe program that makes the calls the
// policy denies.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "ember/sandbox/root.h"
#include "ember/sandbox/seccomp.h"
#include "ember/sandbox/spawner.h"
#include "temp_dir.h"

namespace ember::sandbox {
namespace {

namespace fs = std::filesystem;

#define EMBER_PROBE_PATH "/var/task/sandbox_probe"

Spawner* g_spawner = nullptr;
std::string g_skip;  // why the sandbox cannot run here, if it cannot

struct Output {
  std::string text;
  os::ExitStatus status;
  std::string error;  // the spawn error, if any
};

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!g_skip.empty()) GTEST_SKIP() << g_skip;
    fs::create_directories(bundle_);
    std::ofstream(bundle_ / "data.txt") << "bundle file\n";
    // The probe ships in the bundle, as a function's own binary would.
    fs::copy_file(EMBER_PROBE_DIR "/sandbox_probe", bundle_ / "sandbox_probe");
    auto ns = g_spawner->new_network_namespace();
    ASSERT_TRUE(ns.ok()) << ns.error().message;
    netns_ = std::move(*ns);
  }

  Isolation isolation() {
    Isolation iso;
    iso.host_uid = 3000000 + static_cast<uid_t>(::getpid() % 1000);
    iso.host_gid = iso.host_uid;
    WorkerRoot root;
    root.bundle_dir = bundle_.string();
    root.runtime_dir = EMBER_SOURCE_DIR "/runtimes";
    root.tmp_bytes = 1 << 20;
    iso.root = root_plan(root, HostLayout::read());
    return iso;
  }

  Output run(std::vector<std::string> argv, std::optional<Isolation> iso) {
    int out[2];
    EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
    SpawnRequest req;
    req.argv = std::move(argv);
    req.env = {"PATH=/usr/bin:/bin", "HOME=/tmp"};
    req.cwd = kTaskRoot;
    req.fds = {-1, out[1], out[1], -1};
    req.isolation = std::move(iso);
    auto child = g_spawner->spawn(req);
    ::close(out[1]);
    Output o;
    if (!child.ok()) {
      ::close(out[0]);
      o.error = child.error().message;
      return o;
    }
    char buf[4096];
    ssize_t n;
    while ((n = ::read(out[0], buf, sizeof buf)) > 0) o.text.append(buf, static_cast<size_t>(n));
    ::close(out[0]);
    auto status = child->wait();
    if (status.ok()) o.status = *status;
    return o;
  }

  Output sh(const std::string& script) { return run({"/bin/sh", "-c", script}, isolation()); }
  // Runs the probe in the sandbox with the seccomp policy and its own network.
  Output probe(std::vector<std::string> checks) {
    checks.insert(checks.begin(), EMBER_PROBE_PATH);
    Isolation iso = isolation();
    iso.netns_fd = netns_.get();
    return run(std::move(checks), std::move(iso));
  }

  ember::testing::TempDir tmp_;
  os::UniqueFd netns_;
  fs::path bundle_ = tmp_.path() / "bundle";
};

// Resident processes whose host uid is `uid`.
int processes_of(uid_t uid) {
  int n = 0;
  for (const auto& e : fs::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream status(e.path() / "status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.starts_with("Uid:")) {
        if (std::stoul(line.substr(4)) == uid) ++n;
        break;
      }
    }
  }
  return n;
}

TEST_F(SandboxTest, WorkerRunsAsItsOwnUserInItsOwnRoot) {
  auto o = sh("id -u; id -g; hostname; pwd; cat data.txt; echo x > /dev/null && ls /");
  ASSERT_EQ(o.error, "");
  EXPECT_EQ(o.status.code, 0) << o.text;
  EXPECT_EQ(o.text,
            "1000\n1000\nember\n/var/task\nbundle file\n"
            "bin\ndev\netc\nlib\nlib32\nlib64\nopt\nproc\nsbin\ntmp\nusr\nvar\n");
}

TEST_F(SandboxTest, EveryCapabilityIsGoneAndTheFilterIsOn) {
  auto o =
      sh("grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' "
         "/proc/self/status | tr -s '\\t' ' '");
  ASSERT_EQ(o.error, "");
  EXPECT_EQ(o.text,
            "CapInh: 0000000000000000\nCapPrm: 0000000000000000\nCapEff: 0000000000000000\n"
            "CapBnd: 0000000000000000\nCapAmb: 0000000000000000\nNoNewPrivs: 1\nSeccomp: 2\n");
}

TEST_F(SandboxTest, ProcShowsOnlyTheWorkersProcessesAndMasksHostFiles) {
  auto o =
      sh("echo /proc/[0-9]*; tr '\\0' '\\n' < /proc/1/environ; "
         "cat /proc/keys /proc/timer_list | wc -c; "
         "grep -E ' /proc/(sys|sysrq-trigger|keys) ' /proc/self/mountinfo | cut -d' ' -f5,6");
  ASSERT_EQ(o.error, "");
  // sh itself is pid 1 and alone (the glob is expanded by sh); masked files read empty;
  // /proc/sys is read-only whatever its files' modes say.
  EXPECT_EQ(o.text,
            "/proc/1\nPATH=/usr/bin:/bin\nHOME=/tmp\n0\n"
            "/proc/keys ro,nosuid,noexec,relatime\n"
            "/proc/sys ro,nosuid,nodev,noexec,relatime\n");
}

TEST_F(SandboxTest, HostFilesAreOutOfReach) {
  auto o = sh("ls " + tmp_.path().string() + " /etc/shadow /root 2>&1; ls /etc | tr '\\n' ' '");
  ASSERT_EQ(o.error, "");
  EXPECT_NE(o.text.find("No such file"), std::string::npos) << o.text;
  EXPECT_EQ(o.text.find("bundle"), std::string::npos) << "the test's own directory leaked";
  EXPECT_NE(o.text.find("group hostname hosts"), std::string::npos) << o.text;
}

TEST_F(SandboxTest, RootUsrTaskAndEtcAreReadOnlyTmpIsNot) {
  auto o = probe({"write_root", "write_usr", "write_task", "write_etc", "write_tmp"});
  EXPECT_EQ(o.text,
            "write_root=EROFS\nwrite_usr=EROFS\nwrite_task=EROFS\nwrite_etc=EROFS\n"
            "write_tmp=ok\n");
}

TEST_F(SandboxTest, TmpStopsAtItsSize) {
  auto o = probe({"fill_tmp"});
  EXPECT_EQ(o.text, "fill_tmp=ENOSPC after 1024 KiB\n");
}

TEST_F(SandboxTest, OpenFilesStopAtTheLimit) {
  auto o = probe({"open_files"});
  // 1024 minus stdin, stdout and stderr.
  EXPECT_EQ(o.text, "open_files=EMFILE after 1021\n");
}

TEST_F(SandboxTest, DeniedCallsFailAsThePolicySays) {
  auto o = probe({"mount", "umount", "unshare", "setns", "chroot", "bpf", "keyctl", "add_key",
                  "io_uring_setup", "perf_event_open", "userfaultfd", "clone3", "clone_newuser",
                  "tiocsti", "settimeofday", "clock_settime"});
  EXPECT_EQ(o.text,
            "mount=EPERM\numount=EPERM\nunshare=EPERM\nsetns=EPERM\nchroot=EPERM\nbpf=EPERM\n"
            "keyctl=EPERM\nadd_key=EPERM\nio_uring_setup=EPERM\nperf_event_open=EPERM\n"
            "userfaultfd=EPERM\nclone3=ENOSYS\nclone_newuser=EPERM\ntiocsti=EPERM\n"
            "settimeofday=EPERM\nclock_settime=EPERM\n");
  EXPECT_EQ(o.status.code, 0);
}

TEST_F(SandboxTest, ResourceLimitCallsAndForkStillWork) {
  auto o = probe({"prlimit", "setrlimit", "fork"});
  EXPECT_EQ(o.text, "prlimit=ok\nsetrlimit=ok\nfork=ok\n");
}

TEST_F(SandboxTest, KernelAttackCallsKillTheProcess) {
  for (const char* check : {"ptrace", "process_vm_readv", "kexec_load", "init_module", "reboot",
                            "pidfd_getfd", "kcmp", "open_by_handle_at", "iopl", "int80"}) {
    auto o = probe({check});
    EXPECT_TRUE(o.status.signaled) << check << ": " << o.text;
    if (std::string_view(check) == "int80" && o.status.code == SIGSEGV) {
      continue;  // a kernel without 32-bit emulation refuses int 0x80 before seccomp sees it
    }
    EXPECT_EQ(o.status.code, SIGSYS) << check;
    EXPECT_EQ(o.text, "") << check;
  }
}

TEST_F(SandboxTest, TheFunctionsNetworkHasNoRouteToTheHost) {
  // A listener on the host's loopback, as the daemon's own port would be.
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(listener, 8), 0);
  socklen_t len = sizeof a;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
  const std::string port = std::to_string(ntohs(a.sin_port));
  const std::string socket_path = (tmp_.path() / "admin.sock").string();
  int unix_listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un u{};
  u.sun_family = AF_UNIX;
  std::snprintf(u.sun_path, sizeof u.sun_path, "%s", socket_path.c_str());
  ASSERT_EQ(::bind(unix_listener, reinterpret_cast<sockaddr*>(&u), sizeof u), 0);
  ASSERT_EQ(::listen(unix_listener, 8), 0);

  Isolation host_network = isolation();
  auto reachable = run({EMBER_PROBE_PATH, "connect_tcp=" + port}, host_network);
  EXPECT_EQ(reachable.text, "connect_tcp=ok\n") << "the listener works from the host network";

  Isolation own = isolation();
  own.netns_fd = netns_.get();
  auto o = run({EMBER_PROBE_PATH, "connect_tcp=" + port, "connect_unix=" + socket_path}, own);
  EXPECT_EQ(o.text, "connect_tcp=ECONNREFUSED\nconnect_unix=ENOENT\n");
  auto lo = run({"/bin/sh", "-c", "cat /sys/class/net/lo/operstate 2>/dev/null; ls /sys"}, own);
  ::close(listener);
  ::close(unix_listener);
}

TEST_F(SandboxTest, KillAllHarmsNothingOutsideTheWorker) {
  SpawnRequest req;
  req.argv = {"/bin/sleep", "30"};
  auto bystander = g_spawner->spawn(req);
  ASSERT_TRUE(bystander.ok());
  auto o = probe({"kill_all"});
  auto still = bystander->try_wait();
  ASSERT_TRUE(still.ok());
  EXPECT_FALSE(still->has_value()) << "a process outside the sandbox was killed";
}

TEST_F(SandboxTest, ABackgroundProcessDiesWithItsWorker) {
  Isolation iso = isolation();
  const uid_t uid = iso.host_uid;
  auto o = run({"/bin/sh", "-c", "sleep 60 >/dev/null 2>&1 & echo started"}, iso);
  EXPECT_EQ(o.text, "started\n");
  EXPECT_EQ(processes_of(uid), 0) << "the pid namespace ends with its first process";
}

TEST_F(SandboxTest, AMissingBundleIsAnErrorNamingTheStep) {
  Isolation iso = isolation();
  for (auto& op : iso.root) {
    if (op.target == "var/task") op.text = "/nonexistent/bundle";
  }
  auto o = run({"/bin/true"}, iso);
  EXPECT_NE(o.error.find("/nonexistent/bundle"), std::string::npos) << o.error;
}

// The v2 path for real, on whatever cgroup2 mount the host has (controllers or not): the worker
// is cloned straight into its cgroup and cgroup.kill ends it with everything it started.
TEST_F(SandboxTest, CloneIntoACgroupV2AndKillItThere) {
  fs::path mount;
  for (const char* candidate : {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
    struct statfs st;
    if (::statfs(candidate, &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC) {
      mount = candidate;
      break;
    }
  }
  if (mount.empty()) GTEST_SKIP() << "no cgroup2 mount on this host";
  fs::path dir = mount / ("ember-test-" + std::to_string(::getpid()));
  if (::mkdir(dir.c_str(), 0755) != 0) GTEST_SKIP() << "cannot create " << dir;
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  Isolation iso = isolation();
  iso.cgroup_dir_fd = fd;
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  SpawnRequest req;
  req.argv = {"/bin/sh", "-c", "sleep 60 & cat /proc/self/cgroup; exec sleep 60"};
  req.env = {"PATH=/usr/bin:/bin"};
  req.fds = {-1, out[1], -1, -1};
  req.isolation = std::move(iso);
  auto child = g_spawner->spawn(req);
  ::close(out[1]);
  ASSERT_TRUE(child.ok()) << child.error().message;
  char buf[4096];
  ssize_t n = ::read(out[0], buf, sizeof buf);
  ::close(out[0]);
  // Inside its own cgroup namespace-less view the path is the one made here.
  EXPECT_NE(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0).find(dir.filename().string()),
            std::string::npos);
  // sh (now sleep) and its background sleep, once cat has gone.
  int count = 0;
  for (int i = 0; i < 200; ++i) {
    std::ifstream procs(dir / "cgroup.procs");
    count = 0;
    for (pid_t p; procs >> p;) ++count;
    if (count == 2) break;
    ::usleep(5000);
  }
  EXPECT_EQ(count, 2);
  std::ofstream(dir / "cgroup.kill") << "1";
  auto status = child->wait();
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE(status->signaled);
  for (int i = 0; i < 200 && ::rmdir(dir.c_str()) != 0; ++i) ::usleep(5000);
  EXPECT_FALSE(fs::exists(dir));
  ::close(fd);
}

}  // namespace
}  // namespace ember::sandbox

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // The helper is forked first, while this process has one thread, as emberd does.
  auto policy = ember::sandbox::compile_seccomp();
  if (!policy.ok()) {
    std::fprintf(stderr, "seccomp: %s\n", policy.error().message.c_str());
    return 1;
  }
  ember::sandbox::Confinement confinement;
  confinement.seccomp = std::move(*policy);
  auto spawner = ember::sandbox::Spawner::start(std::move(confinement));
  if (!spawner.ok()) {
    std::fprintf(stderr, "spawner: %s\n", spawner.error().message.c_str());
    return 1;
  }
  ember::sandbox::g_spawner = spawner->get();
  if (::geteuid() != 0) ember::sandbox::g_skip = "the sandbox needs root (run emberd as root)";
  return RUN_ALL_TESTS();
}
