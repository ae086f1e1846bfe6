// The SQLite module: a connection opens in WAL mode, runs SQL, caches its statements, which
// bind, step and read every column type and come back unbound; errors name the database, and
// the file when opening it fails.
#include "ember/sqlite/sqlite.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "temp_dir.h"

namespace ember::sqlite {
namespace {

using ember::testing::TempDir;

constexpr const char* kInsert = "INSERT INTO t (s, n, r, z) VALUES (?1, ?2, ?3, ?4)";
constexpr const char* kSelect = "SELECT s, n, r, z FROM t WHERE rowid = ?1";

class SqliteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = Connection::open(tmp_ / "test.db", "test database");
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    db_ = std::move(*opened);
    ASSERT_TRUE(db_->exec("CREATE TABLE t (s TEXT, n INTEGER, r REAL, z TEXT)").ok());
  }

  TempDir tmp_;
  std::unique_ptr<Connection> db_;
};

TEST_F(SqliteTest, OpenCreatesTheFileInWalModeWithFullSync) {
  EXPECT_TRUE(std::filesystem::exists(tmp_ / "test.db"));
  Statement mode(*db_, "PRAGMA journal_mode");
  ASSERT_EQ(mode.step(), SQLITE_ROW);
  EXPECT_EQ(mode.column_text(0), "wal");
  Statement sync(*db_, "PRAGMA synchronous");
  ASSERT_EQ(sync.step(), SQLITE_ROW);
  EXPECT_EQ(sync.column_int(0), 2);  // FULL
}

TEST_F(SqliteTest, ValuesOfEveryTypeReadBackAsBound) {
  {
    Statement q(*db_, kInsert);
    ASSERT_TRUE(q.get() != nullptr);
    q.text(1, std::string_view("a\0b", 3));  // text with a NUL inside keeps its length
    q.integer(2, INT64_MIN);
    q.real(3, 2.5);
    q.null(4);
    ASSERT_EQ(q.step(), SQLITE_DONE);
  }
  EXPECT_EQ(db_->changes(), 1);
  Statement q(*db_, kSelect);
  q.integer(1, 1);
  ASSERT_EQ(q.step(), SQLITE_ROW);
  EXPECT_EQ(q.column_text(0), std::string("a\0b", 3));
  EXPECT_EQ(q.column_int(1), INT64_MIN);
  EXPECT_DOUBLE_EQ(q.column_real(2), 2.5);
  EXPECT_FALSE(q.column_null(1));
  EXPECT_TRUE(q.column_null(3));
  EXPECT_EQ(q.column_text(3), "");
  EXPECT_EQ(q.step(), SQLITE_DONE);
}

TEST_F(SqliteTest, AStatementIsPreparedOnceAndComesBackResetAndUnbound) {
  sqlite3_stmt* first = nullptr;
  {
    Statement q(*db_, kInsert);
    first = q.get();
    q.text(1, "x");
    q.integer(2, 7);
    ASSERT_EQ(q.step(), SQLITE_DONE);
    q.reset();  // a second row from the same use, with nothing bound
    ASSERT_EQ(q.step(), SQLITE_DONE);
  }
  {
    Statement q(*db_, kInsert);
    EXPECT_EQ(q.get(), first);
    ASSERT_EQ(q.step(), SQLITE_DONE);  // the first use's bindings are gone
  }
  Statement q(*db_, "SELECT count(*), count(s), count(n) FROM t");
  ASSERT_EQ(q.step(), SQLITE_ROW);
  EXPECT_EQ(q.column_int(0), 3);
  EXPECT_EQ(q.column_int(1), 1);
  EXPECT_EQ(q.column_int(2), 1);
}

TEST_F(SqliteTest, BadSqlIsNoStatementAndAnErrorNamingTheDatabase) {
  EXPECT_TRUE(db_->prepare("SELEC nothing") == nullptr);
  Statement q(*db_, "SELECT missing FROM t");
  EXPECT_FALSE(q);
  auto st = db_->exec("INSERT INTO nowhere VALUES (1)");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, Errc::kSystem);
  EXPECT_NE(st.error().message.find("test database"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("nowhere"), std::string::npos) << st.error().message;
  const Error e = db_->error("read");
  EXPECT_EQ(e.message.rfind("read test database: ", 0), 0u) << e.message;
}

TEST_F(SqliteTest, HasColumnSaysWhetherATableHasAColumn) {
  EXPECT_TRUE(db_->has_column("t", "n"));
  EXPECT_FALSE(db_->has_column("t", "kv_reads"));
  EXPECT_FALSE(db_->has_column("nowhere", "n"));
}

TEST(Sqlite, OpeningInAMissingDirectoryNamesThePath) {
  TempDir tmp;
  const auto file = tmp / "missing" / "test.db";
  auto opened = Connection::open(file, "test database");
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().code, Errc::kSystem);
  EXPECT_NE(opened.error().message.find(file.string()), std::string::npos)
      << opened.error().message;
  EXPECT_NE(opened.error().message.find("open test database"), std::string::npos)
      << opened.error().message;
}

}  // namespace
}  // namespace ember::sqlite
