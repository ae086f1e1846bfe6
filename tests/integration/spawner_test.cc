// The spawner helper creates real processes: they are this process's children, see only the
// descriptors and environment they were given, and report exec failures.
#include "ember/sandbox/spawner.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

namespace ember::sandbox {
namespace {

Spawner* g_spawner = nullptr;

struct Pipe {
  int r = -1, w = -1;
  Pipe() { EXPECT_EQ(::pipe2(&r, O_CLOEXEC), 0); }
  ~Pipe() {
    if (r >= 0) ::close(r);
    if (w >= 0) ::close(w);
  }
  void close_write() {
    ::close(w);
    w = -1;
  }
  std::string read_all() {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(r, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    return out;
  }
};

// Runs `argv` with its stdout captured; returns what it printed and its exit.
std::pair<std::string, os::ExitStatus> run(std::vector<std::string> argv,
                                           std::vector<std::string> env, int fd3 = -1) {
  Pipe out;
  SpawnRequest req;
  req.argv = std::move(argv);
  req.env = std::move(env);
  req.fds = {-1, out.w, -1, fd3};
  auto child = g_spawner->spawn(req);
  EXPECT_TRUE(child.ok()) << (child.ok() ? "" : child.error().message);
  if (!child.ok()) return {};
  out.close_write();
  std::string text = out.read_all();
  auto status = child->wait();
  EXPECT_TRUE(status.ok());
  return {text, status.ok() ? *status : os::ExitStatus{}};
}

std::pair<std::string, os::ExitStatus> run_sh(const std::string& script,
                                              std::vector<std::string> env = {"PATH=/usr/bin:/bin"},
                                              int fd3 = -1) {
  return run({"/bin/sh", "-c", script}, std::move(env), fd3);
}

TEST(Spawner, RunsAProgramAndReportsItsExit) {
  auto [text, status] = run_sh("echo hello; exit 3");
  EXPECT_EQ(text, "hello\n");
  EXPECT_FALSE(status.signaled);
  EXPECT_EQ(status.code, 3);
}

TEST(Spawner, ChildrenBelongToTheDaemonNotTheHelper) {
  auto [text, status] = run_sh("echo $PPID");
  EXPECT_EQ(text, std::to_string(::getpid()) + "\n");
}

TEST(Spawner, EnvironmentIsExactlyTheOneGiven) {
  ::setenv("EMBER_TEST_SECRET", "leak", 1);
  auto [text, status] = run({"/usr/bin/env"}, {"A=1", "B=two"});
  EXPECT_EQ(text, "A=1\nB=two\n");
}

TEST(Spawner, OnlyDescriptorsZeroToThreeAreOpen) {
  Pipe extra;  // close-on-exec here, but passed as fd 3
  auto [text, status] =
      run_sh("ls /proc/self/fd | sort -n | tr '\\n' ' '", {"PATH=/usr/bin:/bin"}, extra.w);
  // ls's own directory descriptor shows up as the next free number.
  EXPECT_EQ(text, "0 1 2 3 4 ");
  auto [without, s2] = run_sh("ls /proc/self/fd | sort -n | tr '\\n' ' '");
  EXPECT_EQ(without, "0 1 2 3 ") << "fd 3 is closed when none is given";
}

TEST(Spawner, ExecFailureIsAnErrorNamingTheBinary) {
  SpawnRequest req;
  req.argv = {"/nonexistent/runtime"};
  auto child = g_spawner->spawn(req);
  ASSERT_FALSE(child.ok());
  EXPECT_EQ(child.error().sys_errno, ENOENT);
  EXPECT_NE(child.error().message.find("/nonexistent/runtime"), std::string::npos);
  EXPECT_NE(child.error().message.find("execve"), std::string::npos);
}

TEST(Spawner, DestroyingTheHandleKillsTheProcess) {
  SpawnRequest req;
  req.argv = {"/bin/sleep", "60"};
  pid_t pid;
  int pidfd_copy;
  {
    auto child = g_spawner->spawn(req);
    ASSERT_TRUE(child.ok());
    pid = child->pid();
    pidfd_copy = ::dup(child->pidfd());
    pollfd p{pidfd_copy, POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 0) << "running";
  }
  pollfd p{pidfd_copy, POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 1) << "exited once the handle was destroyed";
  EXPECT_NE(::kill(pid, 0), 0) << "and was reaped";
  ::close(pidfd_copy);
}

TEST(Spawner, SignalAndTryWait) {
  SpawnRequest req;
  req.argv = {"/bin/sleep", "60"};
  auto child = g_spawner->spawn(req);
  ASSERT_TRUE(child.ok());
  auto running = child->try_wait();
  ASSERT_TRUE(running.ok());
  EXPECT_FALSE(running->has_value());
  ASSERT_TRUE(child->signal(SIGTERM).ok());
  auto status = child->wait();
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE(status->signaled);
  EXPECT_EQ(status->code, SIGTERM);
  EXPECT_TRUE(child->signal(SIGKILL).ok()) << "signalling an exited child is harmless";
}

TEST(Spawner, ManySpawnsLeakNoDescriptors) {
  auto count_fds = [] {
    int n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
    return n;
  };
  int before = count_fds();
  for (int i = 0; i < 50; ++i) run_sh("true");
  EXPECT_EQ(count_fds(), before);
}

// The helper's own line of defence, apart from the workers' death signal: a "daemon" (a child of
// this test) starts a helper and a worker that clears its parent-death signal, then dies by
// kill -9. The helper sees the daemon's end of its socket close and kills the worker.
TEST(Spawner, WorkersDieWithTheDaemonEvenWhenTheirDeathSignalWasCleared) {
  if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "/usr/bin/python3 is missing";
  // Orphans come here rather than to init, so the worker's end can be awaited.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  Pipe out;
  const pid_t daemon = ::fork();
  ASSERT_GE(daemon, 0);
  if (daemon == 0) {
    auto spawner = Spawner::start();
    if (!spawner.ok()) ::_exit(1);
    SpawnRequest req;
    req.argv = {"/usr/bin/python3", "-I", "-c",
                "import ctypes, os, time\n"
                "libc = ctypes.CDLL(None)\n"
                "libc.prctl(1, 0, 0, 0, 0)\n"
                "sig = ctypes.c_int(-1)\n"
                "libc.prctl(2, ctypes.byref(sig), 0, 0, 0)\n"
                "os.write(1, b'%d %d\\n' % (os.getpid(), sig.value))\n"
                "time.sleep(300)\n"};
    req.fds = {-1, out.w, -1, -1};
    auto child = (*spawner)->spawn(req);
    if (!child.ok()) ::_exit(2);
    ::pause();
    ::_exit(0);
  }
  out.close_write();
  char line[64] = {};
  ssize_t n = ::read(out.r, line, sizeof line - 1);
  ASSERT_GT(n, 0) << "the worker never reported";
  pid_t worker = 0;
  int signal = -1;
  ASSERT_EQ(std::sscanf(line, "%d %d", &worker, &signal), 2) << line;
  EXPECT_EQ(signal, 0) << "the worker did not manage to clear its death signal";

  const auto killed_at = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(daemon, SIGKILL), 0);
  ASSERT_EQ(::waitpid(daemon, nullptr, 0), daemon);
  // The worker was the daemon's child: now it is ours, and it must end within a second.
  int status = 0;
  pid_t got = 0;
  while ((got = ::waitpid(worker, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() - killed_at < std::chrono::seconds(1)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (got == 0) ::kill(worker, SIGKILL);
  ASSERT_EQ(got, worker) << "the worker outlived its daemon by a second";
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  // The helper exited too (it was the daemon's child, so it is ours now).
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

}  // namespace
}  // namespace ember::sandbox

int main(int argc, char** argv) {
  // The helper is forked first, while this process has one thread, as emberd does.
  auto spawner = ember::sandbox::Spawner::start();
  if (!spawner.ok()) {
    std::fprintf(stderr, "spawner: %s\n", spawner.error().message.c_str());
    return 1;
  }
  ember::sandbox::g_spawner = spawner->get();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
