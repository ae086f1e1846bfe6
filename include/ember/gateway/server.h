// The HTTP transport: Beast sessions on C++20 coroutines over TCP and a Unix socket, with the
// limits that keep one client from holding or exhausting the daemon. What a request means is
// the Application's business; this file only moves bytes safely.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>

#include "ember/common/async.h"
#include "ember/common/log.h"
#include "ember/common/result.h"
#include "ember/gateway/http.h"

namespace ember::gateway {

struct ServerOptions {
  int max_connections = 1024;
  int max_header_bytes = 16 * 1024;
  int64_t max_body_bytes = 6 << 20;   // for routes that do not set their own limit
  int header_timeout_ms = 10'000;     // from the first byte of a request to its last header byte
  int body_timeout_ms = 60'000;       // to receive the whole body
  int keepalive_timeout_ms = 60'000;  // idle time allowed between two requests
  int write_timeout_ms = 30'000;
  int drain_timeout_ms = 30'000;  // how long shutdown waits for requests in flight
};

enum class Transport { kTcp, kUnix };

// What the application decides from a request's header alone, before any body byte is read.
struct Plan {
  std::optional<Response> reject;  // answer this now; the body is never read
  uint64_t body_limit = 0;         // larger bodies get 413
  int route = 0;                   // opaque to the server, handed back to handle()
  std::string name;                // opaque to the server, handed back to handle()
  int version = 0;                 // opaque to the server, handed back to handle()
  std::string qualifier;           // opaque to the server, handed back to handle()
  std::string peer;                // set by the server: the client's address
  // A name the application would read again before deciding (a function it does not know,
  // which another node may have made a moment ago): the server awaits catch_up() with it and
  // asks plan() once more, whose answer then stands.
  std::string catch_up;
};

// A body produced over time and sent with chunked transfer encoding (a followed log).
class BodyStream {
 public:
  virtual ~BodyStream() = default;
  // The next piece of the body; nullopt ends it. May wait as long as it needs.
  virtual boost::asio::awaitable<std::optional<std::string>> next() = 0;
};

// What a handler answers: a whole response, or its head plus a body stream.
struct Reply {
  Reply(Response r) : response(std::move(r)) {}  // NOLINT: implicit by design
  Reply(Response head, std::unique_ptr<BodyStream> s)
      : response(std::move(head)), stream(std::move(s)) {}
  Response response;
  std::unique_ptr<BodyStream> stream;
};

class Application {
 public:
  virtual ~Application() = default;
  virtual Plan plan(const RequestHeader& header, Transport transport) = 0;
  virtual boost::asio::awaitable<Reply> handle(const Plan& plan, Request request) = 0;
  // See Plan::catch_up. Nothing to read again by default.
  virtual boost::asio::awaitable<void> catch_up(const std::string& name) {
    (void)name;
    co_return;
  }
  // Told of every response sent (its head and whole body; a streamed one's head), rejections
  // included: for metrics, and to log what clients got wrong.
  virtual void answered(const Plan& plan, const Response& response) { (void)plan, (void)response; }
  // The answer to a body over the plan's limit, in the route's own error format (Ember's JSON
  // error by default).
  virtual Response too_large(const Plan& plan, std::string message);
};

// Owns its listeners and every connection. All of its state lives on the io_context's thread;
// every method must be called from that thread (or before the io_context runs).
class HttpServer {
 public:
  HttpServer(boost::asio::io_context& io, ServerOptions options, Application& app);
  ~HttpServer();

  // Binds and listens; port 0 picks a free port. Returns the bound endpoint.
  Result<boost::asio::ip::tcp::endpoint> listen_tcp(const std::string& host, uint16_t port);
  // Binds a Unix socket with mode 0660, replacing a stale socket file but never a live one.
  Status listen_unix(const std::filesystem::path& path);
  // Starts the accept loops.
  void start();
  // Serves a stream already connected (one end of a socketpair), as a Unix connection accepted
  // from a listener would be: the connection limit, timeouts and drain apply alike.
  void serve(boost::asio::local::stream_protocol::socket socket);
  // Stops accepting, closes idle connections, lets requests in flight finish with
  // "Connection: close", and closes what is left when drain_timeout_ms runs out.
  boost::asio::awaitable<void> drain();

  bool draining() const { return draining_; }
  size_t connection_count() const { return connections_.size(); }
  uint64_t connections_accepted() const { return accepted_; }

 private:
  struct Connection {
    bool idle = false;
    std::function<void()> close;
  };
  using ConnectionList = std::list<Connection>;

  template <class Acceptor>
  boost::asio::awaitable<void> accept_loop(Acceptor& acceptor, Transport transport);
  template <class Stream>
  boost::asio::awaitable<void> session(Stream stream, Transport transport);
  template <class Stream>
  boost::asio::awaitable<bool> write(Stream& stream, Response& response, bool keep_alive);
  template <class Stream>
  boost::asio::awaitable<bool> write_stream(Stream& stream, Reply& reply, bool keep_alive);
  // Counts a new connection, or refuses it with 503 at max_connections (false).
  template <class Socket>
  bool admit(Socket& socket);
  void connection_closed(ConnectionList::iterator it);
  void log_client_error(std::string_view what);

  boost::asio::io_context& io_;
  ServerOptions options_;
  Application& app_;
  std::optional<boost::asio::ip::tcp::acceptor> tcp_;
  std::optional<boost::asio::local::stream_protocol::acceptor> unix_;
  std::filesystem::path unix_path_;
  ConnectionList connections_;
  bool draining_ = false;
  uint64_t accepted_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  Event drained_;  // set when the last connection closes while draining
  LogRateLimiter client_errors_log_{5, 20};
};

}  // namespace ember::gateway
