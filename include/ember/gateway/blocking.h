// Runs blocking work (disk I/O, archive extraction) on a thread pool and resumes the awaiting
// coroutine on its own executor with the result, so the event loop never waits on the disk.
#pragma once

#include <boost/asio/async_result.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <type_traits>
#include <utility>

namespace ember::gateway {

// A plain function, not a coroutine: GCC 12 mishandles coroutine parameters built from
// temporaries inside a co_await expression, so nothing here adds a coroutine frame.
template <class F>
boost::asio::awaitable<std::invoke_result_t<F&>> run_blocking(boost::asio::thread_pool& pool, F f) {
  using R = std::invoke_result_t<F&>;
  namespace asio = boost::asio;
  return asio::async_initiate<const asio::use_awaitable_t<>, void(R)>(
      [&pool](auto handler, F fn) {
        auto work = asio::make_work_guard(asio::get_associated_executor(handler));
        asio::post(pool, [fn = std::move(fn), handler = std::move(handler),
                          work = std::move(work)]() mutable {
          R result = fn();
          auto ex = work.get_executor();
          asio::post(ex, [handler = std::move(handler), result = std::move(result)]() mutable {
            std::move(handler)(std::move(result));
          });
        });
      },
      asio::use_awaitable, std::move(f));
}

}  // namespace ember::gateway
