#include "daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <regex>

#include "archive_builder.h"
#include "eventually.h"
#include "processes.h"

extern char** environ;

namespace ember::testing {

namespace fs = std::filesystem;

Daemon::Daemon(fs::path state_dir, std::vector<std::string> args, bool with_token)
    : state_dir_(std::move(state_dir)),
      socket_(state_dir_.parent_path() / (state_dir_.filename().string() + ".sock")),
      args_(std::move(args)),
      with_token_(with_token) {}

Daemon::~Daemon() {
  if (pid_ > 0) stop(SIGKILL);
  // What a killed daemon leaves is swept by its next start; this one will have none.
  sweep_cgroups(v1_cgroup_dirs(log()));
}

bool Daemon::start() {
  {
    std::lock_guard lock(mu_);
    log_.clear();
    eof_ = false;
  }
  std::vector<std::string> argv = {EMBER_BINARY,        "--listen", "127.0.0.1:0",   "--state-dir",
                                   state_dir_.string(), "--socket", socket_.string()};
  if (with_token_) {
    argv.push_back("--admin-token");
    argv.push_back(kTestToken);
  }
  // Without root there are no network namespaces; the daemon then starts only when asked to.
  if (::geteuid() != 0) argv.push_back("--insecure");
  argv.insert(argv.end(), args_.begin(), args_.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);

  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return false;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipefd[1], STDERR_FILENO);
  posix_spawn_file_actions_adddup2(&actions, pipefd[1], STDOUT_FILENO);
  int rc = ::posix_spawn(&pid_, EMBER_BINARY, &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipefd[1]);
  if (rc != 0) {
    ::close(pipefd[0]);
    pid_ = -1;
    return false;
  }
  reader_ = std::thread([this, fd = pipefd[0]] { reader(fd); });

  std::unique_lock lock(mu_);
  static const std::regex kListening(R"(listening on http://127\.0\.0\.1:(\d+))");
  std::smatch m;
  bool found = cv_.wait_for(lock, std::chrono::seconds(20),
                            [&] { return std::regex_search(log_, m, kListening) || eof_; });
  if (!found || !std::regex_search(log_, m, kListening)) return false;
  port_ = static_cast<uint16_t>(std::stoi(m[1]));
  return true;
}

void Daemon::reader(int fd) {
  char buf[4096];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::lock_guard lock(mu_);
    log_.append(buf, static_cast<size_t>(n));
    cv_.notify_all();
  }
  ::close(fd);
  std::lock_guard lock(mu_);
  eof_ = true;
  cv_.notify_all();
}

int Daemon::stop(int signal) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, signal);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  if (reader_.joinable()) reader_.join();
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

int Daemon::wait_exit(int timeout_ms) {
  if (pid_ <= 0) return -1;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int status = 0;
  while (true) {
    pid_t got = ::waitpid(pid_, &status, WNOHANG);
    if (got == pid_) break;
    if (got < 0 && errno != EINTR) return -1;
    if (std::chrono::steady_clock::now() >= until) return -2;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pid_ = -1;
  if (reader_.joinable()) reader_.join();
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::string Daemon::log() const {
  std::lock_guard lock(mu_);
  return log_;
}

bool Daemon::wait_for_log(const std::string& needle, int timeout_ms) const {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
    return log_.find(needle) != std::string::npos || eof_;
  }) && log_.find(needle) != std::string::npos;
}

HttpResponse Daemon::admin(const std::string& method, const std::string& target,
                           const std::string& body, Headers headers) const {
  headers["Authorization"] = std::string("Bearer ") + kTestToken;
  return http_request(port_, method, target, body, headers);
}

HttpResponse Daemon::deploy_code(const std::string& name, const std::string& runtime,
                                 const std::string& code, const nlohmann::json& extra) const {
  const bool node = runtime == "node";
  nlohmann::json manifest = {{"runtime", runtime},
                             {"handler", node ? "index.handler" : "main.handler"}};
  manifest.update(extra);
  return admin("PUT", "/v1/functions/" + name,
               ArchiveBuilder(ArchiveKind::kZip)
                   .file("function.json", manifest.dump())
                   .file(node ? "index.js" : "main.py", code)
                   .build());
}

double metric_sample(const std::string& text, const std::string& series) {
  const size_t at = text.find("\n" + series + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + series.size() + 2));
}

double Daemon::metric(const std::string& name) const {
  return metric_sample(admin("GET", "/metrics").body, name);
}

nlohmann::json Daemon::wait_for_invocation(const std::string& id, const std::string& status) const {
  nlohmann::json last;
  eventually(
      [&] {
        auto r = admin("GET", "/v1/invocations/" + id);
        last = r.json();
        return r.status == 200 && last["status"] == status;
      },
      std::chrono::milliseconds(20'000));
  return last;
}

namespace {

// The live (not zombie) children of `parent`, with their command names.
std::vector<std::pair<pid_t, std::string>> live_children(pid_t parent) {
  std::vector<std::pair<pid_t, std::string>> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::string comm = line.substr(line.find('(') + 1, close - line.find('(') - 1);
    char state = 0;
    int ppid = 0;
    std::sscanf(line.c_str() + close + 2, "%c %d", &state, &ppid);
    if (ppid == parent && state != 'Z') out.emplace_back(std::stoi(name), std::move(comm));
  }
  return out;
}

// Whether `pid` runs the python bytecode compiler emberd starts after a deploy
// (runtimes/python/compile.py): a python3 below the daemon, but no worker.
bool compiles_bytecode(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return cmdline.find("/python/compile.py") != std::string::npos;
}

}  // namespace

std::vector<pid_t> worker_pids(pid_t daemon) {
  std::vector<pid_t> out;
  for (auto& [pid, comm] : live_children(daemon)) {
    if (comm != "ember-spawner" && comm != "ember-zygote" && !compiles_bytecode(pid)) {
      out.push_back(pid);
    }
  }
  return out;
}

pid_t child_named(pid_t parent, const std::string& comm) {
  for (auto& [pid, name] : live_children(parent)) {
    if (name == comm) return pid;
  }
  return 0;
}

RunResult run_emberd(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {EMBER_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return {};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipefd[1], STDERR_FILENO);
  posix_spawn_file_actions_adddup2(&actions, pipefd[1], STDOUT_FILENO);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, EMBER_BINARY, &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipefd[1]);
  RunResult result;
  if (rc != 0) {
    ::close(pipefd[0]);
    return result;
  }
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) result.output.append(buf, n);
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

}  // namespace ember::testing
