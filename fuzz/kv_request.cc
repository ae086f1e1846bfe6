// A worker's KV_REQUEST (docs/worker-protocol.md#key-value-requests) as kv::Service serves it:
// meta and body from a hostile function, checked against its grants and run on the embedded
// SQLite store. Checked: exactly one reply per request, its meta a JSON object with "ok", and a
// refusal names its errorType.
#include <fuzzer/FuzzedDataProvider.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <system_error>

#include "ember/kv/service.h"
#include "ember/kv/store.h"
#include "scratch.h"

using namespace ember::kv;
using nlohmann::json;

namespace {

struct Harness {
  std::string dir;
  std::unique_ptr<Store> store;
  std::unique_ptr<Service> service;
  Grants grants;
  Harness() {
    dir = ember::fuzz::scratch_dir("kv");
    SqliteOptions options;
    options.file = dir + "/kv.db";
    options.limits.namespace_quota_bytes = 1 << 20;
    auto opened = open_sqlite(options);
    if (!opened) std::abort();
    store = std::move(*opened);
    service = std::make_unique<Service>(*store, ServiceOptions{});
    grants.own = "fn";
    grants.shared.emplace("shared", Access::kRead);
    grants.shared.emplace("team", Access::kReadWrite);
  }
  ~Harness() {
    service.reset();
    store.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness h;
  FuzzedDataProvider in(data, size);
  std::optional<uint32_t> ops;
  if (in.ConsumeBool()) ops = in.ConsumeIntegralInRange<uint32_t>(0, 1200);
  const json meta = json::parse(in.ConsumeRandomLengthString(), nullptr, false);
  if (!meta.is_object()) return 0;  // a protocol error: the worker is killed before this
  std::string body = in.ConsumeRemainingBytesAsString();
  auto replied = std::make_shared<std::promise<std::string>>();
  auto calls = std::make_shared<int>(0);
  h.service->handle(h.grants, meta, std::move(body), ops,
                    [replied, calls](std::string reply_meta, std::string) {
                      if (++*calls != 1) std::abort();
                      replied->set_value(std::move(reply_meta));
                    });
  const json reply = json::parse(replied->get_future().get(), nullptr, false);
  if (!reply.is_object() || !reply.contains("ok") || !reply["ok"].is_boolean()) std::abort();
  if (!reply["ok"].get<bool>() &&
      (!reply.contains("errorType") || !reply["errorType"].is_string())) {
    std::abort();
  }
  return 0;
}
