#include "ember/gateway/server.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "ember/common/async.h"
#include "ember/gateway/framing.h"
#include "ember/os/fs.h"

namespace ember::gateway {

Response Application::too_large(const Plan& /*plan*/, std::string message) {
  return error_response(http::status::payload_too_large, "payload_too_large", message);
}

namespace asio = boost::asio;
namespace beast = boost::beast;
using asio::ip::tcp;
using asio::local::stream_protocol;
using std::chrono::milliseconds;

namespace {

// /healthz and /readyz: what a load balancer asks of a draining daemon.
bool is_health_check(std::string_view target) {
  target = target.substr(0, target.find('?'));
  return target == "/healthz" || target == "/readyz";
}

constexpr size_t kFirstReadBytes = 4096;

// Written straight into the socket of a connection over the cap: no session, no parsing.
constexpr std::string_view kOverloaded =
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Server: ember\r\n"
    "Content-Type: application/json\r\n"
    "Connection: close\r\n"
    "Retry-After: 1\r\n"
    "Content-Length: 85\r\n"
    "\r\n"
    "{\"error\":{\"code\":\"overloaded\",\"message\":\"too many connections, retry in a "
    "moment\"}}\n";

template <class Socket>
void reject_overloaded(Socket& socket) {
  boost::system::error_code ec;
  socket.non_blocking(true, ec);
  // A fresh socket's send buffer takes this whole; if not, the client gets a reset instead.
  socket.write_some(asio::buffer(kOverloaded.data(), kOverloaded.size()), ec);
  socket.shutdown(asio::socket_base::shutdown_send, ec);
  socket.close(ec);
}

std::string_view buffer_text(const beast::flat_buffer& buffer) {
  const auto data = buffer.data();
  return {static_cast<const char*>(data.data()), data.size()};
}

// After a refusal the client may still be sending (a body, pipelined requests). Closing with
// unread bytes makes the kernel send a reset, which can destroy the answer before the client has
// read it; so, as nginx's lingering close does, stop sending and drain what comes for a moment.
template <class Stream>
asio::awaitable<void> linger(Stream& stream) {
  constexpr auto kLingerTime = milliseconds(1000);
  constexpr size_t kLingerBytes = 1 << 20;
  boost::system::error_code ignored;
  stream.socket().shutdown(asio::socket_base::shutdown_send, ignored);
  stream.expires_after(kLingerTime);
  char sink[4096];
  for (size_t total = 0; total < kLingerBytes;) {
    auto [ec, n] = co_await stream.async_read_some(asio::buffer(sink), kAwait);
    if (ec) break;
    total += n;
  }
}

FramingError bad_request(std::string message) {
  return FramingError{http::status::bad_request, std::move(message)};
}

bool is_continue_expected(const RequestHeader& header) {
  auto it = header.find(http::field::expect);
  return it != header.end() && beast::iequals(it->value(), "100-continue");
}

}  // namespace

HttpServer::HttpServer(asio::io_context& io, ServerOptions options, Application& app)
    : io_(io), options_(options), app_(app), drained_(io.get_executor()) {}

HttpServer::~HttpServer() {
  *alive_ = false;
  if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
}

Result<tcp::endpoint> HttpServer::listen_tcp(const std::string& host, uint16_t port) {
  boost::system::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) return Error::invalid("listen address \"" + host + "\" is not an IP address");
  tcp::endpoint endpoint(address, port);
  tcp::acceptor acceptor(io_);
  std::string where = endpoint.address().to_string() + ":" + std::to_string(port);
  if (acceptor.open(endpoint.protocol(), ec); ec) return Error::system("socket", where, ec.value());
  acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (acceptor.bind(endpoint, ec); ec) return Error::system("bind", where, ec.value());
  if (acceptor.listen(asio::socket_base::max_listen_connections, ec); ec) {
    return Error::system("listen", where, ec.value());
  }
  auto bound = acceptor.local_endpoint(ec);
  tcp_.emplace(std::move(acceptor));
  return bound;
}

Status HttpServer::listen_unix(const std::filesystem::path& path) {
  std::string where = path.string();
  if (auto st = os::ensure_dir(path.parent_path().empty() ? "." : path.parent_path(), 0755); !st) {
    return st;
  }
  boost::system::error_code ec;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Error::invalid(where + " exists and is not a socket; not replacing it");
    }
    stream_protocol::socket probe(io_);
    probe.connect(stream_protocol::endpoint(where), ec);
    if (!ec) return Error::conflict("another daemon already serves " + where);
    ::unlink(path.c_str());
  }
  stream_protocol::acceptor acceptor(io_);
  if (acceptor.open(stream_protocol(), ec); ec) return Error::system("socket", where, ec.value());
  if (acceptor.bind(stream_protocol::endpoint(where), ec); ec) {
    return Error::system("bind", where, ec.value());
  }
  // The file mode is the access control, so it is set before listen(): until then nobody can
  // connect, whatever the umask gave the new file.
  if (::chmod(path.c_str(), 0660) != 0) return Error::system("chmod", where, errno);
  if (acceptor.listen(asio::socket_base::max_listen_connections, ec); ec) {
    return Error::system("listen", where, ec.value());
  }
  unix_.emplace(std::move(acceptor));
  unix_path_ = path;
  return {};
}

void HttpServer::start() {
  if (tcp_) {
    asio::co_spawn(io_, accept_loop(*tcp_, Transport::kTcp),
                   log_escaped("gateway: tcp accept loop"));
  }
  if (unix_) {
    asio::co_spawn(io_, accept_loop(*unix_, Transport::kUnix),
                   log_escaped("gateway: unix accept loop"));
  }
}

template <class Socket>
bool HttpServer::admit(Socket& socket) {
  if (static_cast<int>(connections_.size()) >= options_.max_connections) {
    log_client_error("connection limit of " + std::to_string(options_.max_connections) +
                     " reached, refusing a connection");
    reject_overloaded(socket);
    return false;
  }
  ++accepted_;
  return true;
}

void HttpServer::serve(stream_protocol::socket socket) {
  if (!admit(socket)) return;
  asio::co_spawn(io_,
                 session(beast::basic_stream<stream_protocol>(std::move(socket)), Transport::kUnix),
                 log_escaped("gateway: session"));
}

void HttpServer::log_client_error(std::string_view what) {
  uint64_t suppressed = 0;
  if (!client_errors_log_.allow(suppressed)) return;
  if (suppressed) {
    spdlog::warn("gateway: {} ({} similar messages suppressed)", what, suppressed);
  } else {
    spdlog::warn("gateway: {}", what);
  }
}

template <class Acceptor>
asio::awaitable<void> HttpServer::accept_loop(Acceptor& acceptor, Transport transport) {
  asio::steady_timer backoff(io_);
  while (acceptor.is_open()) {
    auto [ec, socket] = co_await acceptor.async_accept(kAwait);
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      // Out of descriptors or memory: retrying at once would spin.
      log_client_error("accept: " + ec.message());
      backoff.expires_after(milliseconds(50));
      co_await backoff.async_wait(kAwait);
      continue;
    }
    if constexpr (std::is_same_v<Acceptor, tcp::acceptor>) {
      if (!admit(socket)) continue;
      boost::system::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      asio::co_spawn(io_, session(beast::tcp_stream(std::move(socket)), transport),
                     log_escaped("gateway: session"));
    } else {
      serve(std::move(socket));
    }
  }
}

template <class Stream>
asio::awaitable<bool> HttpServer::write(Stream& stream, Response& response, bool keep_alive) {
  response.keep_alive(keep_alive);
  response.prepare_payload();
  stream.expires_after(milliseconds(options_.write_timeout_ms));
  if (response.chunked()) {
    auto [ec, n] = co_await http::async_write(stream, response, kAwait);
    co_return !ec;
  }
  // The head in one buffer and the body in another: Beast's serializer would gather each field
  // as a buffer of its own, which cost more CPU than the rest of a warm call's answer.
  const std::string head = wire_head(response);
  const std::array<asio::const_buffer, 2> buffers{asio::buffer(head),
                                                  asio::buffer(response.body())};
  auto [ec, n] = co_await asio::async_write(stream, buffers, kAwait);
  co_return !ec;
}

template <class Stream>
asio::awaitable<bool> HttpServer::write_stream(Stream& stream, Reply& reply, bool keep_alive) {
  http::response<http::empty_body> head{reply.response.base()};
  head.keep_alive(keep_alive);
  head.chunked(true);
  http::response_serializer<http::empty_body> serializer{head};
  stream.expires_after(milliseconds(options_.write_timeout_ms));
  auto [ec, n] = co_await http::async_write_header(stream, serializer, kAwait);
  if (ec) co_return false;
  while (true) {
    std::optional<std::string> piece = co_await reply.stream->next();
    stream.expires_after(milliseconds(options_.write_timeout_ms));
    if (!piece) {
      auto [lec, ln] = co_await asio::async_write(stream, http::make_chunk_last(), kAwait);
      co_return !lec;
    }
    if (piece->empty()) continue;
    auto [cec, cn] =
        co_await asio::async_write(stream, http::make_chunk(asio::buffer(*piece)), kAwait);
    if (cec) co_return false;
  }
}

template <class Stream>
asio::awaitable<void> HttpServer::session(Stream stream, Transport transport) {
  connections_.push_back(Connection{false, [&stream] {
                                      boost::system::error_code ignored;
                                      stream.socket().close(ignored);
                                    }});
  // Unregisters on every exit path, including destruction of the suspended coroutine when the
  // io_context goes away; `alive` says whether the server still exists then.
  struct Registration {
    HttpServer* server;
    ConnectionList::iterator it;
    std::weak_ptr<bool> alive;
    ~Registration() {
      if (auto a = alive.lock(); a && *a) server->connection_closed(it);
    }
  } registration{this, std::prev(connections_.end()), alive_};
  // The client's address, for the events of HTTP triggers; a local socket's client is this host.
  std::string peer = "127.0.0.1";
  if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
    boost::system::error_code ec;
    auto endpoint = stream.socket().remote_endpoint(ec);
    if (!ec) {
      auto address = endpoint.address();
      if (address.is_v6() && address.to_v6().is_v4_mapped()) {
        address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
      }
      peer = address.to_string();
    }
  }
  Connection& self = *registration.it;

  beast::flat_buffer buffer;
  bool first_request = true;
  // Accepted while draining: it is answered once, and only a health check is served.
  const bool late = draining_;
  while (true) {
    // Idle between requests: wait for the first byte under the keep-alive timeout. Draining
    // closes connections in this state, but for one that has just arrived: it gets its one
    // answer (a load balancer's readiness check learns that the daemon is going).
    if (buffer.size() == 0) {
      if (draining_ && !first_request) break;
      self.idle = true;
      stream.expires_after(milliseconds(options_.keepalive_timeout_ms));
      auto [ec, n] = co_await stream.async_read_some(buffer.prepare(kFirstReadBytes), kAwait);
      self.idle = false;
      if (ec) break;
      buffer.commit(n);
    }

    // Leading empty lines before a request line are ignored (RFC 9112 §2.2).
    while (buffer.size() >= 2 && std::string_view(buffer_text(buffer).substr(0, 2)) == "\r\n") {
      buffer.consume(2);
    }
    // The whole header must arrive within header_timeout_ms (slowloris); on timeout Beast
    // closes the socket, so there is nobody left to answer. It is scanned for what Beast would
    // accept but a proxy could read differently before Beast parses it.
    stream.expires_after(milliseconds(options_.header_timeout_ms));
    const size_t header_limit = static_cast<size_t>(options_.max_header_bytes);
    HeaderScanner scanner;
    std::optional<FramingError> refused;
    bool header_complete = false;
    bool lost = false;
    while (true) {
      auto scan = scanner.scan(buffer_text(buffer));
      if (scan.error) {
        refused = std::move(scan.error);
        break;
      }
      if (scan.end && *scan.end <= header_limit) {
        header_complete = true;
        break;
      }
      if (scan.end || buffer.size() >= header_limit) {
        refused = FramingError{http::status::request_header_fields_too_large,
                               "request header is over the limit of " +
                                   std::to_string(options_.max_header_bytes) + " bytes"};
        break;
      }
      auto [rec, rn] = co_await stream.async_read_some(buffer.prepare(kFirstReadBytes), kAwait);
      if (rec) {
        lost = true;
        break;
      }
      buffer.commit(rn);
    }
    if (lost) break;

    http::request_parser<http::empty_body> header_parser;
    header_parser.header_limit(static_cast<uint32_t>(options_.max_header_bytes));
    // The route's body limit is applied below, once the route is known; Beast's default
    // would otherwise turn a large Content-Length into an error before routing.
    header_parser.body_limit(boost::none);
    if (header_complete) {
      boost::system::error_code pec;
      buffer.consume(header_parser.put(buffer.data(), pec));
      if (pec || !header_parser.is_header_done()) {
        refused = bad_request(describe_parse_error(pec));
      } else {
        refused = check_framing(header_parser.get());
      }
    }
    if (refused) {
      const auto code = refused->status == http::status::request_header_fields_too_large
                            ? "header_too_large"
                        : refused->status == http::status::bad_request ? "bad_request"
                                                                       : "unsupported";
      Response res = error_response(refused->status, code, refused->message);
      // Counted and logged (rate-limited) by the application, as a request without a route.
      Plan rejected;
      rejected.peer = peer;
      app_.answered(rejected, res);
      if (co_await write(stream, res, false)) co_await linger(stream);
      break;
    }

    const RequestHeader& header = header_parser.get();
    const unsigned version = header.version();
    const bool keep_alive = header_parser.keep_alive();
    // Unless the parser is done, a body follows; answering without reading it means the
    // connection cannot carry another request.
    const bool body_pending = !header_parser.is_done();
    Plan plan = app_.plan(header, transport);
    if (!plan.catch_up.empty()) {
      co_await app_.catch_up(plan.catch_up);
      plan = app_.plan(header, transport);
    }
    plan.peer = peer;
    first_request = false;
    if (late && !plan.reject && !is_health_check(header.target())) {
      plan.reject = error_response(http::status::service_unavailable, "unavailable",
                                   "the daemon is stopping");
      plan.reject->set(http::field::retry_after, "1");
    }
    if (!plan.reject) {
      auto length = header_parser.content_length();
      if (length && *length > plan.body_limit) {
        plan.reject = app_.too_large(plan, "request body of " + std::to_string(*length) +
                                               " bytes is over the limit of " +
                                               std::to_string(plan.body_limit) + " bytes");
      }
    }
    if (plan.reject) {
      plan.reject->version(version);
      app_.answered(plan, *plan.reject);
      bool again = keep_alive && !body_pending && !draining_;
      if (!co_await write(stream, *plan.reject, again)) break;
      if (!again) {
        if (body_pending) co_await linger(stream);
        break;
      }
      continue;
    }
    if (body_pending && is_continue_expected(header)) {
      http::response<http::empty_body> cont{http::status::continue_, version};
      stream.expires_after(milliseconds(options_.write_timeout_ms));
      auto [wec, wn] = co_await http::async_write(stream, cont, kAwait);
      if (wec) break;
    }

    http::request_parser<http::string_body> parser(std::move(header_parser));
    parser.body_limit(plan.body_limit);
    // A small body usually came in the header's read: it is parsed from the buffer, and only
    // what is missing is read.
    boost::system::error_code bec;
    if (!parser.is_done() && buffer.size() > 0) {
      buffer.consume(parser.put(buffer.data(), bec));
      if (bec == http::error::need_more) bec = {};
    }
    if (!bec && !parser.is_done()) {
      stream.expires_after(milliseconds(options_.body_timeout_ms));
      auto [rec, rn] = co_await http::async_read(stream, buffer, parser, kAwait);
      bec = rec;
    }
    if (bec == http::error::body_limit) {
      Response res = app_.too_large(
          plan, "request body is over the limit of " + std::to_string(plan.body_limit) + " bytes");
      res.version(version);
      app_.answered(plan, res);
      co_await write(stream, res, false);
      break;
    }
    if (bec) {
      // A body that breaks the framing is answered before the connection closes; a client that
      // went away or stalled has nobody to answer.
      if (bec.category() == http::make_error_code(http::error::bad_chunk).category() &&
          bec != http::error::end_of_stream && bec != http::error::partial_message &&
          bec != http::error::short_read) {
        const std::string why = describe_parse_error(bec);
        Response res = error_response(http::status::bad_request, "bad_request", why);
        res.version(version);
        app_.answered(plan, res);
        if (co_await write(stream, res, false)) co_await linger(stream);
      }
      break;
    }

    Reply reply = co_await app_.handle(plan, parser.release());
    reply.response.version(version);
    app_.answered(plan, reply.response);
    bool again = keep_alive && !draining_;
    bool written = reply.stream ? co_await write_stream(stream, reply, again)
                                : co_await write(stream, reply.response, again);
    if (!written || !again || draining_) break;
  }
  boost::system::error_code ignored;
  stream.socket().shutdown(asio::socket_base::shutdown_send, ignored);
}

void HttpServer::connection_closed(ConnectionList::iterator it) {
  connections_.erase(it);
  if (draining_ && connections_.empty()) drained_.set();
}

asio::awaitable<void> HttpServer::drain() {
  draining_ = true;
  // The listeners stay open while connections drain: a new connection gets one answer and is
  // closed, so /readyz answers 503 instead of being refused while calls finish.
  for (auto& c : connections_) {
    if (c.idle) c.close();
  }
  if (!connections_.empty()) {
    spdlog::info("gateway: draining {} connections for up to {} ms", connections_.size(),
                 options_.drain_timeout_ms);
    co_await drained_.wait_for(milliseconds(options_.drain_timeout_ms));
  }
  boost::system::error_code ignored;
  if (tcp_) tcp_->close(ignored);
  if (unix_) unix_->close(ignored);
  if (!connections_.empty()) {
    spdlog::warn("gateway: closing {} connections still busy after {} ms", connections_.size(),
                 options_.drain_timeout_ms);
    drained_.reset();  // set earlier if the connections came and went
    for (auto& c : connections_) c.close();
    // Closed sockets fail their pending operations on the next turns of the loop.
    co_await drained_.wait_for(milliseconds(1000));
  }
}

}  // namespace ember::gateway
