#include "ember/runtime/kv_bridge.h"

#include <boost/asio/post.hpp>
#include <memory>
#include <mutex>
#include <vector>

namespace ember::runtime {

namespace {

// Replies made on a store thread, carried to the event loop together: a commit answers many
// requests at once, and they cost one post and one wake-up of the loop, not one each.
class ReplyQueue : public std::enable_shared_from_this<ReplyQueue> {
 public:
  explicit ReplyQueue(boost::asio::io_context& io) : io_(io) {}

  void push(worker::KvReply reply, std::string meta, std::string body) {
    std::lock_guard lock(mu_);
    queued_.push_back(Item{std::move(reply), std::move(meta), std::move(body)});
    if (scheduled_) return;
    scheduled_ = true;
    boost::asio::post(io_, [self = shared_from_this()] { self->drain(); });
  }

 private:
  struct Item {
    worker::KvReply reply;
    std::string meta, body;
  };

  void drain() {
    std::vector<Item> items;
    {
      std::lock_guard lock(mu_);
      items.swap(queued_);
      scheduled_ = false;
    }
    for (Item& item : items) item.reply(std::move(item.meta), std::move(item.body));
  }

  boost::asio::io_context& io_;
  std::mutex mu_;
  std::vector<Item> queued_;
  bool scheduled_ = false;
};

}  // namespace

kv::Grants kv_grants(const std::string& function, const registry::FunctionConfig& config) {
  kv::Grants grants{function, {}};
  for (const auto& [ns, access] : config.kv_shared) {
    // The manifest was validated when it was deployed: only "r" and "rw" reach here.
    grants.shared.emplace(ns, kv::parse_access(access).value_or(kv::Access::kNone));
  }
  return grants;
}

worker::KvHandler kv_handler(boost::asio::io_context& io, kv::Service& service, kv::Grants grants) {
  return [&service, grants = std::move(grants), replies = std::make_shared<ReplyQueue>(io)](
             const nlohmann::json& meta, std::string body, std::optional<uint32_t> ops_in_call,
             worker::KvReply reply) {
    const kv::Counted counted = service.handle(
        grants, meta, std::move(body), ops_in_call,
        [replies, reply = std::move(reply)](std::string meta_out, std::string body_out) mutable {
          replies->push(std::move(reply), std::move(meta_out), std::move(body_out));
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
