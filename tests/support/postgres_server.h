// A throwaway PostgreSQL 15 server for tests of the shared storage: a fresh cluster in a
// temporary directory, listening on 127.0.0.1 and a Unix socket of its own, stopped and removed
// when the object goes. Each test takes a database of its own from it.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <string>

namespace ember::testing {

class PostgresServer {
 public:
  // One server for the whole test binary, started on first use; nullptr when it cannot run
  // here, with the reason in `why_not` (for GTEST_SKIP).
  static PostgresServer* shared(std::string* why_not);
  // A server of one's own (a test that stops or kills it).
  static std::unique_ptr<PostgresServer> start(std::string* why_not);
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // Creates a new, empty database and returns its libpq connection string (over TCP).
  std::string create_database();
  std::string conninfo(const std::string& database) const;
  int port() const { return port_; }
  // Stops the server at once (pg_ctl -m immediate), as a crash would; restart() brings it back
  // on the same port and data.
  void kill();
  bool restart();

 private:
  PostgresServer() = default;
  bool launch(std::string* why_not);

  std::filesystem::path dir_;  // data/, the socket and the log
  int port_ = 0;
  int databases_ = 0;
};

}  // namespace ember::testing
