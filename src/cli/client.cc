#include "client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cctype>

namespace ember::cli {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using boost::system::error_code;

namespace {

// Large enough for any answer of the API (a log page, a function list); a bundle goes up, never
// down.
constexpr uint64_t kMaxReplyBytes = 256ull << 20;
// Bodies are sent in pieces of this size, so that progress can be told.
constexpr size_t kPieceBytes = 256 * 1024;

Error broken(const Endpoint& e, std::string_view what, const error_code& ec) {
  return Error{Errc::kUnavailable,
               "cannot " + std::string(what) + " emberd at " + e.describe() + ": " + ec.message()};
}

template <class Socket>
Status send(Socket& socket, const Endpoint& e, std::string_view method, const std::string& target,
            const std::string& body, const Headers& headers, const Progress& progress) {
  http::request<http::buffer_body> req;
  req.method_string(method);
  req.target(target);
  req.version(11);
  if (e.host.empty()) {
    req.set(http::field::host, "localhost");
  } else {
    const bool v6 = e.host.find(':') != std::string::npos;
    req.set(http::field::host, (v6 ? "[" + e.host + "]" : e.host) + ":" + e.port);
  }
  req.set(http::field::user_agent, "ember-cli");
  req.set(http::field::connection, "close");
  if (!e.host.empty() && !e.token.empty()) {
    req.set(http::field::authorization, "Bearer " + e.token);
  }
  for (const auto& [name, value] : headers) req.set(name, value);
  req.content_length(body.size());
  req.body().data = nullptr;
  req.body().more = !body.empty();
  http::request_serializer<http::buffer_body> serializer{req};
  error_code ec;
  http::write_header(socket, serializer, ec);
  if (ec) return broken(e, "send a request to", ec);
  size_t sent = 0;
  while (sent < body.size()) {
    const size_t n = std::min(kPieceBytes, body.size() - sent);
    req.body().data = const_cast<char*>(body.data() + sent);
    req.body().size = n;
    req.body().more = sent + n < body.size();
    http::write(socket, serializer, ec);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) return broken(e, "send a request to", ec);
    sent += n;
    if (progress) progress(sent, body.size());
  }
  if (!body.empty()) {
    // The last piece said "more"; an empty one ends the body.
    req.body().data = nullptr;
    req.body().size = 0;
    req.body().more = false;
    http::write(socket, serializer, ec);
    if (ec && ec != http::error::need_buffer) return broken(e, "send a request to", ec);
  }
  return {};
}

void take_headers(const http::fields& fields, Reply& reply) {
  for (const auto& f : fields) {
    std::string name(f.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    reply.headers[name] = std::string(f.value());
  }
}

template <class Socket>
Result<Reply> receive(Socket& socket, const Endpoint& e) {
  boost::beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxReplyBytes);
  error_code ec;
  http::read(socket, buffer, parser, ec);
  if (ec) return broken(e, "read the answer of", ec);
  Reply reply;
  reply.status = static_cast<int>(parser.get().result_int());
  take_headers(parser.get().base(), reply);
  reply.body = std::move(parser.get().body());
  return reply;
}

template <class Socket>
Result<Reply> receive_stream(Socket& socket, const Endpoint& e, const PieceSink& sink) {
  boost::beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);  // a followed log has no end
  error_code ec;
  http::read_header(socket, buffer, parser, ec);
  if (ec) return broken(e, "read the answer of", ec);
  Reply reply;
  reply.status = static_cast<int>(parser.get().result_int());
  take_headers(parser.get().base(), reply);
  char piece[16 * 1024];
  while (!parser.is_done()) {
    parser.get().body().data = piece;
    parser.get().body().size = sizeof piece;
    // read_some, not read: a piece is handed on as soon as it arrives, not once the buffer is
    // full.
    http::read_some(socket, buffer, parser, ec);
    if (ec == http::error::need_buffer) ec = {};
    if (ec == http::error::end_of_stream || ec == asio::error::eof) break;
    if (ec) return broken(e, "read the answer of", ec);
    const std::string_view got(piece, sizeof piece - parser.get().body().size);
    if (reply.status != 200) {
      reply.body.append(got);
    } else if (!got.empty() && !sink(got)) {
      break;
    }
  }
  return reply;
}

// Connects a socket of the endpoint's kind and runs `exchange` on it.
template <class Exchange>
auto with_socket(const Endpoint& e, Exchange&& exchange)
    -> decltype(exchange(std::declval<asio::local::stream_protocol::socket&>())) {
  asio::io_context io;
  error_code ec;
  if (e.host.empty()) {
    asio::local::stream_protocol::socket socket(io);
    socket.connect(asio::local::stream_protocol::endpoint(e.socket), ec);
    if (ec) return broken(e, "connect to", ec);
    return exchange(socket);
  }
  asio::ip::tcp::resolver resolver(io);
  auto addresses = resolver.resolve(e.host, e.port, ec);
  if (ec) return broken(e, "resolve", ec);
  asio::ip::tcp::socket socket(io);
  asio::connect(socket, addresses, ec);
  if (ec) return broken(e, "connect to", ec);
  socket.set_option(asio::ip::tcp::no_delay(true), ec);
  return exchange(socket);
}

}  // namespace

std::string Endpoint::describe() const {
  return host.empty() ? socket : "http://" + host + ":" + port;
}

Status parse_url(std::string_view url, Endpoint& endpoint) {
  constexpr std::string_view kScheme = "http://";
  if (url.substr(0, kScheme.size()) != kScheme) {
    return Error::invalid("the URL must start with http://, got \"" + std::string(url) + "\"");
  }
  std::string_view rest = url.substr(kScheme.size());
  if (size_t slash = rest.find('/'); slash != std::string_view::npos) {
    if (rest.substr(slash) != "/") {
      return Error::invalid("the URL names emberd's address, without a path: \"" +
                            std::string(url) + "\"");
    }
    rest = rest.substr(0, slash);
  }
  std::string_view host = rest, port = "80";
  if (!rest.empty() && rest.front() == '[') {  // [IPv6]:port
    size_t close = rest.find(']');
    if (close == std::string_view::npos) return Error::invalid("unclosed [ in the URL");
    host = rest.substr(1, close - 1);
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':') return Error::invalid("bad port in the URL");
      port = rest.substr(close + 2);
    }
  } else if (size_t colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.empty()) return Error::invalid("the URL has no host: \"" + std::string(url) + "\"");
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string_view::npos) {
    return Error::invalid("bad port in the URL: \"" + std::string(url) + "\"");
  }
  endpoint.host = std::string(host);
  endpoint.port = std::string(port);
  return {};
}

std::string Reply::header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->second;
}

Result<Reply> Client::request(std::string_view method, const std::string& target,
                              const std::string& body, const Headers& headers,
                              const Progress& progress) const {
  return with_socket(endpoint_, [&](auto& socket) -> Result<Reply> {
    if (auto st = send(socket, endpoint_, method, target, body, headers, progress); !st) {
      // The daemon may have answered before reading the whole body (413, 401): its answer
      // says more than the broken pipe.
      if (auto reply = receive(socket, endpoint_); reply) return reply;
      return st.error();
    }
    return receive(socket, endpoint_);
  });
}

Result<Reply> Client::stream(std::string_view method, const std::string& target,
                             const PieceSink& sink) const {
  return with_socket(endpoint_, [&](auto& socket) -> Result<Reply> {
    if (auto st = send(socket, endpoint_, method, target, {}, {}, {}); !st) return st.error();
    return receive_stream(socket, endpoint_, sink);
  });
}

}  // namespace ember::cli
