// A queue served by one thread that takes everything queued at once as a batch: the shape of
// group commit, where what arrives during one fsync shares the next.
#pragma once

#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace ember {

template <class Item>
class BatchQueue {
 public:
  BatchQueue() = default;
  BatchQueue(const BatchQueue&) = delete;
  BatchQueue& operator=(const BatchQueue&) = delete;
  ~BatchQueue() { stop(); }

  // Starts the thread; `serve(std::vector<Item>&)` runs once for each batch, in order.
  template <class Serve>
  void start(Serve serve) {
    thread_ = std::thread([this, serve = std::move(serve)]() mutable {
      while (true) {
        std::vector<Item> batch;
        {
          std::unique_lock lock(mu_);
          cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
          if (queue_.empty()) return;  // stopping, and nothing left
          batch.swap(queue_);
        }
        serve(batch);
      }
    });
  }
  void push(Item item) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(item));
    }
    cv_.notify_one();
  }
  // Serves what is queued, then joins.
  void stop() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Item> queue_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace ember
