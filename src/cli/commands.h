// The `ember` command line: its commands, options, output and exit codes (docs/cli.md).
#pragma once

#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace ember::cli {

// Exit codes a script can rely on.
enum Exit : int {
  kOk = 0,
  kApiError = 1,        // emberd answered with an error (the message is printed)
  kUsage = 2,           // the command line is wrong
  kUnreachable = 3,     // emberd could not be reached
  kFunctionFailed = 4,  // invoke: the function ran and failed (error, timeout, crash)
};

struct Environment {
  std::function<std::optional<std::string>(const std::string&)> get;  // getenv
  bool stderr_is_tty = false;
};

// Runs `ember ARGS...` (without the program name), writing to `out` and `err`.
int run(const std::vector<std::string>& args, const Environment& env, std::ostream& out,
        std::ostream& err);

}  // namespace ember::cli
