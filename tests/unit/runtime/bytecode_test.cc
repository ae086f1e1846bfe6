// Python bytecode stored beside a bundle's modules: the compiler's stream read as it arrives, and
// what may be written where (the compiler runs as the function, so its output is not trusted).
#include "ember/runtime/bytecode.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "temp_dir.h"

namespace ember::runtime {
namespace {

namespace fs = std::filesystem;

std::string u32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

std::string tag_bytes(const std::string& tag) {
  return u32(static_cast<uint32_t>(tag.size())) + tag;
}

std::string record(const std::string& path, const std::string& pyc) {
  return u32(static_cast<uint32_t>(path.size())) + u32(static_cast<uint32_t>(pyc.size())) + path +
         pyc;
}

const std::string kPyc = std::string(16, '\x01') + "code";

TEST(BytecodeStream, ReadsTheTagThenEachModuleHoweverTheBytesArrive) {
  const std::string wire = tag_bytes("cpython-311") + record("main.py", kPyc) +
                           record("pkg/util.py", kPyc + "more") + record("pkg/__init__.py", kPyc);
  // Every way of cutting the stream in two gives the same modules.
  for (size_t cut = 0; cut <= wire.size(); ++cut) {
    BytecodeStream s;
    std::vector<std::string> got;
    for (std::string_view part :
         {std::string_view(wire).substr(0, cut), std::string_view(wire).substr(cut)}) {
      s.feed(part);
      while (true) {
        auto m = s.next();
        ASSERT_TRUE(m.ok()) << m.error().message;
        if (!*m) break;
        got.push_back((*m)->source + "=" + std::to_string((*m)->pyc.size()));
      }
    }
    EXPECT_EQ(s.tag(), "cpython-311");
    EXPECT_EQ(got, (std::vector<std::string>{"main.py=20", "pkg/util.py=24", "pkg/__init__.py=20"}))
        << "cut at " << cut;
  }
}

TEST(BytecodeStream, RefusesRecordsOverItsLimits) {
  {
    BytecodeStream s;
    s.feed(u32(0));
    EXPECT_FALSE(s.next().ok()) << "an empty tag";
  }
  {
    BytecodeStream s;
    s.feed(u32(BytecodeStream::kMaxTag + 1));
    EXPECT_FALSE(s.next().ok()) << "a tag over its limit";
  }
  {
    BytecodeStream s;
    s.feed(tag_bytes("t") + u32(BytecodeStream::kMaxPath + 1) + u32(16));
    EXPECT_FALSE(s.next().ok()) << "a path over its limit, refused before it arrives";
  }
  {
    BytecodeStream s;
    s.feed(tag_bytes("t") + u32(7) + u32(BytecodeStream::kMaxPyc + 1));
    EXPECT_FALSE(s.next().ok()) << "a .pyc over its limit, refused before it arrives";
  }
}

class StorePyc : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::write_text(bundle() / "main.py", "x = 1\n");
    testing::write_text(bundle() / "pkg" / "util.py", "y = 2\n");
    testing::write_text(dir_.path() / "outside" / "secret.py", "z = 3\n");
  }
  fs::path bundle() const { return dir_.path() / "bundle"; }
  Status store(const std::string& source, const std::string& tag = "cpython-311",
               const std::string& pyc = kPyc) {
    return store_pyc(bundle(), tag, BytecodeStream::Module{source, pyc});
  }
  testing::TempDir dir_;
};

TEST_F(StorePyc, WritesBesideTheModuleWhereTheImportSystemLooks) {
  ASSERT_TRUE(store("main.py").ok());
  ASSERT_TRUE(store("pkg/util.py").ok());
  EXPECT_EQ(testing::read_text(bundle() / "__pycache__" / "main.cpython-311.pyc"), kPyc);
  EXPECT_EQ(testing::read_text(bundle() / "pkg" / "__pycache__" / "util.cpython-311.pyc"), kPyc);
  struct stat st {};
  ASSERT_EQ(::stat((bundle() / "pkg" / "__pycache__" / "util.cpython-311.pyc").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u) << "readable by the function's uid, written by none";
  // Nothing left aside.
  EXPECT_EQ(testing::count_entries(bundle() / "__pycache__"), 1u);
}

TEST_F(StorePyc, LeavesAFileThatIsThereAlone) {
  testing::write_text(bundle() / "__pycache__" / "main.cpython-311.pyc", "the bundle's own");
  ASSERT_TRUE(store("main.py").ok());
  EXPECT_EQ(testing::read_text(bundle() / "__pycache__" / "main.cpython-311.pyc"),
            "the bundle's own");
}

TEST_F(StorePyc, RefusesPathsThatAreNotPlainModulesOfTheBundle) {
  for (const char* source : {"../outside/secret.py", "/etc/passwd.py", "pkg//util.py", "./main.py",
                             "pkg/../main.py", "main.txt", ".py", "pkg/.py", "missing.py", "pkg"}) {
    EXPECT_FALSE(store(source).ok()) << source;
  }
  EXPECT_FALSE(store(std::string("ma\0in.py", 8)).ok()) << "a NUL in the path";
  EXPECT_FALSE(store("main.py", "../../x").ok()) << "a tag that is a path";
  EXPECT_FALSE(store("main.py", "").ok());
  EXPECT_FALSE(store("main.py", "cpython-311", "short").ok()) << "no .pyc header";
  EXPECT_FALSE(fs::exists(dir_.path() / "outside" / "__pycache__"));
  EXPECT_FALSE(fs::exists(bundle() / "__pycache__"));
}

TEST_F(StorePyc, FollowsNoLink) {
  // A directory link, a module link and a __pycache__ link, all pointing outside the bundle.
  fs::create_directory_symlink(dir_.path() / "outside", bundle() / "linked");
  fs::create_symlink(dir_.path() / "outside" / "secret.py", bundle() / "alias.py");
  EXPECT_FALSE(store("linked/secret.py").ok());
  EXPECT_FALSE(store("alias.py").ok());
  fs::create_directory_symlink(dir_.path() / "outside", bundle() / "pkg" / "__pycache__");
  EXPECT_FALSE(store("pkg/util.py").ok());
  EXPECT_EQ(testing::count_entries(dir_.path() / "outside"), 1u) << "nothing written outside";
}

}  // namespace
}  // namespace ember::runtime
