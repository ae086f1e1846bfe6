// Starts the real emberd as a child process on 127.0.0.1 port 0 and talks to it as a user would.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "http_client.h"

namespace ember::testing {

inline constexpr const char* kTestToken = "e2e-admin-token-0123456789abcdef";

class Daemon {
 public:
  // `state_dir` survives restarts of this object's process; `args` are appended to the
  // command line (--listen, --state-dir, --socket and --admin-token are set here).
  explicit Daemon(std::filesystem::path state_dir, std::vector<std::string> args = {},
                  bool with_token = true);
  ~Daemon();

  // Starts emberd and waits until it logs its port; false if it exited or stayed silent.
  bool start();
  // Sends `signal` and waits for the exit; returns the exit status, or 128+signal if killed.
  int stop(int signal = SIGTERM);
  // Waits for the daemon to exit by itself; its status as stop() gives it, or -2 on timeout.
  int wait_exit(int timeout_ms);
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  uint16_t port() const { return port_; }
  const std::filesystem::path& socket() const { return socket_; }
  const std::filesystem::path& state_dir() const { return state_dir_; }
  std::string log() const;
  bool wait_for_log(const std::string& needle, int timeout_ms = 10000) const;

  // Requests over TCP with the admin token.
  HttpResponse admin(const std::string& method, const std::string& target,
                     const std::string& body = "", Headers headers = {}) const;
  // Deploys a one-file function: `code` as index.js (node: handler index.handler) or main.py
  // (python: main.handler), with a function.json of the runtime, that handler and `extra`.
  HttpResponse deploy_code(const std::string& name, const std::string& runtime,
                           const std::string& code,
                           const nlohmann::json& extra = nlohmann::json::object()) const;
  // The value of the sample `name` (with its labels, as /metrics prints it); -1 when absent.
  double metric(const std::string& name) const;
  // Polls GET /v1/invocations/{id} until its status is `status`, for up to 20 s; returns what
  // it last said.
  nlohmann::json wait_for_invocation(const std::string& id, const std::string& status) const;

 private:
  void reader(int fd);

  std::filesystem::path state_dir_;
  std::filesystem::path socket_;
  std::vector<std::string> args_;
  bool with_token_;
  pid_t pid_ = -1;
  uint16_t port_ = 0;
  std::thread reader_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::string log_;
  bool eof_ = false;
};

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// The value of the sample `series` (name and labels exactly as printed) in a /metrics text, or
// -1 when it is not there.
double metric_sample(const std::string& text, const std::string& series);

// Worker processes of `daemon`: its live children, except the spawner helper, the zygote and the
// python bytecode compiler a deploy starts.
std::vector<pid_t> worker_pids(pid_t daemon);
// The live child of `parent` whose command name is `comm` (ember-zygote, say); 0 when none.
pid_t child_named(pid_t parent, const std::string& comm);

// Runs emberd with `args` to completion (for --check-config, --help and start-up failures).
RunResult run_emberd(const std::vector<std::string>& args);

}  // namespace ember::testing
