#include "ember/runtime/kv_bridge.h"

#include <boost/asio/post.hpp>

namespace ember::runtime {

kv::Grants kv_grants(const std::string& function, const registry::FunctionConfig& config) {
  kv::Grants grants{function, {}};
  for (const auto& [ns, access] : config.kv_shared) {
    // The manifest was validated when it was deployed: only "r" and "rw" reach here.
    grants.shared.emplace(ns, kv::parse_access(access).value_or(kv::Access::kNone));
  }
  return grants;
}

worker::KvHandler kv_handler(boost::asio::io_context& io, kv::Service& service, kv::Grants grants) {
  return [&io, &service, grants = std::move(grants)](const nlohmann::json& meta, std::string body,
                                                     std::optional<uint32_t> ops_in_call,
                                                     worker::KvReply reply) {
    const kv::Counted counted = service.handle(
        grants, meta, std::move(body), ops_in_call,
        [&io, reply = std::move(reply)](std::string meta_out, std::string body_out) mutable {
          boost::asio::post(io, [reply = std::move(reply), meta_out = std::move(meta_out),
                                 body_out = std::move(body_out)]() mutable {
            reply(std::move(meta_out), std::move(body_out));
          });
        });
    switch (counted) {
      case kv::Counted::kRead:
        return worker::KvCount::kRead;
      case kv::Counted::kWrite:
        return worker::KvCount::kWrite;
      case kv::Counted::kNone:
        break;
    }
    return worker::KvCount::kNone;
  };
}

}  // namespace ember::runtime
