// What a client sends emberd: the bytes of one connection, from the request line to the last
// body byte, served by the real gateway (HttpServer and Api over a socketpair) with a registry,
// invoke keys and the key-value store in a temporary state directory (no scheduler: invokes
// answer 503). This reaches Beast's parser under Ember's limits, the framing checks, routing,
// admin and key authentication, SigV4, and the deploy, Lambda, alias, key and KV routes.
// Checked: the server answers or closes, and never takes longer than 10 s to finish with a
// client that has sent everything and closed its side; every answer it sends parses as HTTP and
// an error answer (4xx, 5xx) carries a JSON body.
#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "ember/common/async.h"
#include "ember/gateway/api.h"
#include "ember/gateway/keys.h"
#include "ember/gateway/server.h"
#include "ember/kv/service.h"
#include "ember/kv/store.h"
#include "ember/registry/registry.h"
#include "scratch.h"

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace fs = std::filesystem;
using namespace ember;

namespace {

// The state is made again every kRounds inputs, so a long run's deploys do not fill the disk.
constexpr int kRounds = 2000;

struct State {
  fs::path dir;
  std::unique_ptr<registry::Registry> registry;
  std::unique_ptr<gateway::InvokeKeys> keys;
  std::unique_ptr<kv::Store> kv_store;
  std::unique_ptr<kv::Service> kv;
  std::unique_ptr<gateway::Api> api;
  std::unique_ptr<gateway::HttpServer> server;

  State(asio::io_context& io, asio::thread_pool& blocking) {
    dir = fuzz::scratch_dir("http");
    registry::RegistryOptions options;
    options.state_dir = dir;
    options.limits.max_compressed_bytes = 1 << 20;
    options.limits.max_extracted_bytes = 8 << 20;
    options.max_versions = 3;
    registry = std::move(registry::Registry::open(options).value());
    keys = std::move(gateway::InvokeKeys::open(dir).value());
    kv::SqliteOptions kv_options;
    kv_options.file = dir / "kv.db";
    kv_store = std::move(kv::open_sqlite(kv_options).value());
    kv = std::make_unique<kv::Service>(*kv_store, kv::ServiceOptions{});
    gateway::ApiOptions api_options;
    api_options.admin_token = "fuzz-admin-token";
    api_options.max_bundle_bytes = 1 << 20;
    api_options.max_body_bytes = 64 << 10;
    api = std::make_unique<gateway::Api>(api_options, *registry, blocking);
    api->set_keys(keys.get());
    api->set_kv(kv.get());
    gateway::ServerOptions server_options;
    server_options.header_timeout_ms = 2000;
    server_options.body_timeout_ms = 2000;
    server_options.keepalive_timeout_ms = 2000;
    server_options.write_timeout_ms = 2000;
    server = std::make_unique<gateway::HttpServer>(io, server_options, *api);
    api->set_server(server.get());
  }
  ~State() {
    server.reset();
    api.reset();
    kv.reset();
    kv_store.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

struct Harness {
  asio::io_context io;
  asio::thread_pool blocking{1};
  std::unique_ptr<State> state;
  int rounds = 0;
  Harness() { spdlog::set_level(spdlog::level::off); }
  ~Harness() { state.reset(); }
  State& fresh() {
    if (!state || ++rounds % kRounds == 0) {
      state.reset();
      state = std::make_unique<State>(io, blocking);
    }
    return *state;
  }
};

// Aborts unless `bytes`, what the server wrote, is a sequence of HTTP responses (the last may
// be cut short by a close) whose errors have JSON bodies.
void check_answers(const std::string& bytes) {
  boost::beast::flat_buffer buffer;
  buffer.commit(asio::buffer_copy(buffer.prepare(bytes.size()), asio::buffer(bytes)));
  while (buffer.size() > 0) {
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    parser.header_limit(64 << 10);
    boost::system::error_code ec;
    while (!ec && !parser.is_done() && buffer.size() > 0) {
      buffer.consume(parser.put(buffer.data(), ec));
      if (ec == http::error::need_more) break;
    }
    if (ec == http::error::need_more || !parser.is_done()) return;  // cut short
    if (ec) std::abort();                                           // not HTTP
    const auto& response = parser.get();
    const unsigned status = response.result_int();
    if (status >= 400 && !response.body().empty() &&
        response[http::field::content_type].starts_with("application/json") &&
        nlohmann::json::parse(response.body(), nullptr, false).is_discarded()) {
      std::abort();
    }
    if (status >= 400 && response.body().empty() && status != 405) {
      std::abort();  // an error with nothing to say
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness h;
  State& state = h.fresh();
  asio::local::stream_protocol::socket server_end(h.io), client(h.io);
  asio::local::connect_pair(server_end, client);
  state.server->serve(std::move(server_end));
  std::string answers;
  bool finished = false;
  asio::co_spawn(
      h.io,
      [&]() -> asio::awaitable<void> {
        // Everything at once, then the write side closed: the server must answer what it can
        // and end the connection.
        co_await asio::async_write(client, asio::buffer(data, size), kAwait);
        boost::system::error_code ignored;
        client.shutdown(asio::socket_base::shutdown_send, ignored);
        char chunk[16384];
        for (;;) {
          auto [ec, n] = co_await client.async_read_some(asio::buffer(chunk), kAwait);
          answers.append(chunk, n);
          if (ec) break;
        }
        finished = true;
      },
      asio::detached);
  h.io.restart();
  h.io.run_for(std::chrono::seconds(10));
  if (!finished) std::abort();  // a connection the server never let go of
  // An answer to HEAD has a length but no body, which a reader must know to parse what follows:
  // inputs with a line starting with HEAD are checked for the hang only.
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (!input.starts_with("HEAD") && input.find("\nHEAD") == std::string_view::npos) {
    check_answers(answers);
  }
  return 0;
}
