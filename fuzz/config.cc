// The operator's configuration: the config file (config::apply_config_json), the command line
// (parse_command_line) and listen addresses (parse_listen). Not hostile input, but a typo must
// get an error naming the field, never a crash. Checked: restart_needed of a config against
// itself is empty.
#include "ember/config/config.h"

#include <fuzzer/FuzzedDataProvider.h>

#include <cstdlib>
#include <string>
#include <vector>

using namespace ember::config;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  switch (in.ConsumeIntegralInRange<int>(0, 2)) {
    case 0: {
      Config config;
      if (apply_config_json(in.ConsumeRemainingBytesAsString(), config) &&
          !restart_needed(config, config).empty()) {
        std::abort();
      }
      return 0;
    }
    case 1: {
      std::vector<std::string> args;
      while (in.remaining_bytes() > 0 && args.size() < 12) {
        args.push_back(in.ConsumeRandomLengthString(64));
      }
      (void)parse_command_line(args);
      return 0;
    }
    default:
      (void)parse_listen(in.ConsumeRemainingBytesAsString());
      return 0;
  }
}
