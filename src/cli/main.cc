// ember: the command line for emberd (docs/cli.md).
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "commands.h"

int main(int argc, char** argv) {
  ember::cli::Environment env;
  env.get = [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
  env.stderr_is_tty = ::isatty(STDERR_FILENO) == 1;
  return ember::cli::run(std::vector<std::string>(argv + 1, argv + argc), env, std::cout,
                         std::cerr);
}
