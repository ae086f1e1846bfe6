// A function's configuration as users write it: function.json (registry::parse_config), a PATCH
// body (patch_config), deploy query parameters (overrides_from_query), schedule expressions
// (Schedule::parse) and names (validate_name). Checked: whatever is accepted survives the trip
// through the JSON the API shows it as (to_json, then parse_config) unchanged.
#include "ember/registry/manifest.h"

#include <fuzzer/FuzzedDataProvider.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "ember/registry/schedule.h"

using namespace ember::registry;
using nlohmann::json;

namespace {

void round_trip(const FunctionConfig& config) {
  auto again = parse_config(config.to_json());
  if (!again || !(*again == config)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0: {  // a manifest, then a patch of what it gave
      const json manifest = json::parse(in.ConsumeRandomLengthString(), nullptr, false);
      const json patch = json::parse(in.ConsumeRemainingBytesAsString(), nullptr, false);
      if (manifest.is_discarded()) return 0;
      auto config = parse_config(manifest);
      if (!config) return 0;
      round_trip(*config);
      if (patch.is_discarded()) return 0;
      if (auto patched = patch_config(*config, patch)) round_trip(*patched);
      return 0;
    }
    case 1: {  // deploy query parameters over an empty manifest
      std::vector<std::pair<std::string, std::string>> params;
      while (in.remaining_bytes() > 0 && params.size() < 16) {
        std::string key = in.ConsumeRandomLengthString(32);
        params.emplace_back(std::move(key), in.ConsumeRandomLengthString(64));
      }
      auto overrides = overrides_from_query(params);
      if (!overrides) return 0;
      if (auto config = parse_config(json::object(), *overrides)) round_trip(*config);
      return 0;
    }
    case 2: {  // a schedule: each next time lies after the one before, within its years
      // Seconds since the epoch, to 2106: four bytes of input.
      const int64_t start = int64_t{in.ConsumeIntegral<uint32_t>()} * 1000;
      auto schedule = Schedule::parse(in.ConsumeRemainingBytesAsString());
      if (!schedule) return 0;
      int64_t t = start;
      for (int i = 0; i < 3; ++i) {
        auto next = schedule->next_after(t);
        if (!next) break;
        if (*next <= t || *next >= 7'258'118'400'000) std::abort();
        t = *next;
      }
      return 0;
    }
    default:
      (void)validate_name(in.ConsumeRemainingBytesAsString());
      return 0;
  }
}
