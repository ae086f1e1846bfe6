#include "postgres_server.h"

#include <fmt/format.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>

#include "http_client.h"

namespace ember::testing {

namespace fs = std::filesystem;

namespace {

const fs::path kBin = "/usr/lib/postgresql/15/bin";

// PostgreSQL refuses to run as root: as root its tools run as the postgres user.
std::string as_owner(const std::string& command) {
  if (::geteuid() != 0) return command;
  return "runuser -u postgres -- " + command;
}

int shell(const std::string& command) { return std::system(command.c_str()); }

}  // namespace

PostgresServer* PostgresServer::shared(std::string* why_not) {
  static std::once_flag once;
  static std::unique_ptr<PostgresServer> server;
  static std::string reason;
  std::call_once(once, [] {
    // Under ctest, the run's one server (tests/support/postgres-fixture), when it is up.
    if (const char* dir = std::getenv("EMBER_TEST_POSTGRES_DIR")) {
      std::ifstream port_file(fs::path(dir) / "port");
      int port = 0;
      if (port_file >> port && port > 0) {
        server.reset(new PostgresServer());
        server->port_ = port;  // dir_ stays empty: not this process's to stop
        return;
      }
    }
    server = start(&reason);
  });
  if (!server && why_not) *why_not = reason;
  return server.get();
}

std::unique_ptr<PostgresServer> PostgresServer::start(std::string* why_not) {
  if (!fs::exists(kBin / "initdb")) {
    *why_not = "PostgreSQL 15 is not installed (scripts/setup --test installs it)";
    return nullptr;
  }
  if (::geteuid() == 0 && ::getpwnam("postgres") == nullptr) {
    *why_not = "running as root without a postgres user to run PostgreSQL as";
    return nullptr;
  }
  std::unique_ptr<PostgresServer> s(new PostgresServer());
  char tmpl[] = "/tmp/ember-pg-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    *why_not = "cannot make a temporary directory";
    return nullptr;
  }
  s->dir_ = tmpl;
  if (::geteuid() == 0) {
    const passwd* pw = ::getpwnam("postgres");
    if (::chown(tmpl, pw->pw_uid, pw->pw_gid) != 0) {
      *why_not = "cannot give the temporary directory to postgres";
      return nullptr;
    }
  }
  const std::string data = (s->dir_ / "data").string();
  if (shell(as_owner(fmt::format("{}/initdb -D {} -U ember --auth=trust -E UTF8 --locale=C.UTF-8 "
                                 "--no-sync >{}/initdb.log 2>&1",
                                 kBin.string(), data, s->dir_.string()))) != 0) {
    *why_not = "initdb failed: see " + (s->dir_ / "initdb.log").string();
    return nullptr;
  }
  if (!s->launch(why_not)) return nullptr;
  return s;
}

bool PostgresServer::launch(std::string* why_not) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (port_ == 0 || attempt > 0) port_ = free_port();
    // fsync off: the tests crash Ember, not the machine, and a commit still reaches the server.
    const std::string cmd = as_owner(
        fmt::format("{}/pg_ctl -D {}/data -l {}/server.log -w -t 60 -o \"-p {} -k {} "
                    "-c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off "
                    "-c max_connections=300 -c shared_buffers=64MB\" start >/dev/null 2>&1",
                    kBin.string(), dir_.string(), dir_.string(), port_, dir_.string()));
    if (shell(cmd) == 0) return true;
  }
  if (why_not) *why_not = "pg_ctl start failed: see " + (dir_ / "server.log").string();
  return false;
}

PostgresServer::~PostgresServer() {
  if (dir_.empty()) return;
  kill();
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

void PostgresServer::kill() {
  (void)shell(as_owner(fmt::format("{}/pg_ctl -D {}/data -m immediate -w stop >/dev/null 2>&1",
                                   kBin.string(), dir_.string())));
}

bool PostgresServer::restart() { return launch(nullptr); }

std::string PostgresServer::conninfo(const std::string& database) const {
  return fmt::format("host=127.0.0.1 port={} dbname={} user=ember connect_timeout=5", port_,
                     database);
}

std::string PostgresServer::create_database() {
  const std::string name = fmt::format("t{}_{}", ::getpid(), ++databases_);
  PGconn* c = PQconnectdb(conninfo("postgres").c_str());
  PGresult* r = PQexec(c, ("CREATE DATABASE " + name).c_str());
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  std::string message = PQerrorMessage(c);
  PQclear(r);
  PQfinish(c);
  if (!ok) throw std::runtime_error("CREATE DATABASE " + name + ": " + message);
  return conninfo(name);
}

}  // namespace ember::testing
