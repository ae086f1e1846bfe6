// The daemon encodes a spawn request and the helper decodes it: every field survives the trip,
// the descriptors arrive in wire order above the range the child sets up, and a truncated or
// oversized request is refused instead of read past its end.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "helper_wire.h"

namespace ember::sandbox::wire {
namespace {

struct Fds {
  std::vector<int> fds;
  explicit Fds(int n) {
    for (int i = 0; i < n; ++i) fds.push_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  }
  ~Fds() {
    for (int fd : fds) ::close(fd);
  }
};

struct Decoded {
  Prepared p;
  const char* error = nullptr;
  ~Decoded() {
    for (int fd : p.owned) ::close(fd);
  }
};

void decode(const std::string& bytes, const std::vector<int>& fds, Decoded& out) {
  Reader r(bytes.data(), bytes.size());
  uint32_t kind = 0;
  ASSERT_TRUE(r.u32(kind));
  ASSERT_EQ(kind, kSpawn);
  out.error = parse_spawn(r, fds.data(), fds.size(), out.p);
}

bool same_file(int a, int b) {
  struct stat sa {
  }, sb{};
  return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

TEST(SpawnWire, EveryFieldSurvivesTheRoundTrip) {
  Fds open(6);  // fd 1, fd 3, the network namespace, the cgroup dir, two cgroup.procs
  SpawnRequest req;
  req.argv = {"/usr/bin/node", "--flag", ""};
  req.env = {"A=1", "EMPTY="};
  req.cwd = "/var/task";
  req.fds = {-1, open.fds[0], -1, open.fds[1]};
  req.max_processes = 77;
  req.max_data_bytes = uint64_t{5} << 30;
  Isolation iso;
  iso.host_uid = 600001;
  iso.host_gid = 600002;
  iso.uid = 1000;
  iso.gid = 1001;
  iso.hostname = "fn-host";
  iso.netns_fd = open.fds[2];
  iso.cgroup_dir_fd = open.fds[3];
  iso.cgroup_procs_fds = {open.fds[4], open.fds[5]};
  iso.root = {RootOp{RootOp::Kind::kDir, "usr", "", 0, 0755, true, false},
              RootOp{RootOp::Kind::kBindHost, "usr", "/usr", 0, 0, true, false},
              RootOp{RootOp::Kind::kTmpfs, "tmp", "", uint64_t{64} << 20, 01777, false, false},
              RootOp{RootOp::Kind::kBindInside, "proc/kcore", "dev/null", 0, 0, true, true}};
  req.isolation = iso;

  std::vector<int> fds;
  auto bytes = encode_spawn(req, fds);
  ASSERT_TRUE(bytes.ok()) << bytes.error().message;
  EXPECT_EQ(fds, open.fds) << "descriptors go in wire order";

  Decoded d;
  decode(*bytes, fds, d);
  ASSERT_EQ(d.error, nullptr) << d.error;
  const Prepared& p = d.p;
  ASSERT_EQ(p.argv.size(), 4u);
  EXPECT_STREQ(p.argv[0], "/usr/bin/node");
  EXPECT_STREQ(p.argv[1], "--flag");
  EXPECT_STREQ(p.argv[2], "");
  EXPECT_EQ(p.argv[3], nullptr);
  ASSERT_EQ(p.env.size(), 3u);
  EXPECT_STREQ(p.env[0], "A=1");
  EXPECT_STREQ(p.env[1], "EMPTY=");
  EXPECT_EQ(p.env[2], nullptr);
  EXPECT_STREQ(p.cwd, "/var/task");
  EXPECT_STREQ(p.hostname, "fn-host");
  EXPECT_TRUE(p.isolate);
  EXPECT_EQ(p.host_uid, 600001u);
  EXPECT_EQ(p.host_gid, 600002u);
  EXPECT_EQ(p.uid, 1000u);
  EXPECT_EQ(p.gid, 1001u);
  EXPECT_EQ(p.max_processes, 77u);
  EXPECT_EQ(p.max_data, uint64_t{5} << 30);
  ASSERT_EQ(p.ops.size(), 4u);
  for (size_t i = 0; i < p.ops.size(); ++i) {
    const RootOp& want = iso.root[i];
    EXPECT_EQ(p.ops[i].kind, static_cast<uint32_t>(want.kind)) << i;
    EXPECT_STREQ(p.ops[i].target, want.target.c_str()) << i;
    EXPECT_STREQ(p.ops[i].text, want.text.c_str()) << i;
    EXPECT_EQ(p.ops[i].size, want.size) << i;
    EXPECT_EQ(p.ops[i].mode, want.mode) << i;
    EXPECT_EQ(p.ops[i].read_only != 0, want.read_only) << i;
    EXPECT_EQ(p.ops[i].optional != 0, want.optional) << i;
  }
  // Descriptors: copies of the right files, all at kFirstHighFd or above, owned by `p`.
  EXPECT_EQ(p.fds[0], -1);
  EXPECT_EQ(p.fds[2], -1);
  EXPECT_TRUE(same_file(p.fds[1], open.fds[0]));
  EXPECT_TRUE(same_file(p.fds[3], open.fds[1]));
  EXPECT_TRUE(same_file(p.netns, open.fds[2]));
  EXPECT_TRUE(same_file(p.cgroup_dir, open.fds[3]));
  ASSERT_EQ(p.cgroup_procs.size(), 2u);
  EXPECT_EQ(p.owned.size(), 6u);
  for (int fd : p.owned) EXPECT_GE(fd, kFirstHighFd);
}

TEST(SpawnWire, APlainChildCarriesNoRoot) {
  SpawnRequest req;
  req.argv = {"/bin/true"};
  Isolation iso;
  iso.namespaces = false;  // cgroups only
  iso.root = {RootOp{RootOp::Kind::kDir, "usr", "", 0, 0755, true, false}};
  req.isolation = iso;
  std::vector<int> fds;
  auto bytes = encode_spawn(req, fds);
  ASSERT_TRUE(bytes.ok());
  Decoded d;
  decode(*bytes, fds, d);
  ASSERT_EQ(d.error, nullptr);
  EXPECT_FALSE(d.p.isolate);
  EXPECT_TRUE(d.p.ops.empty()) << "a root is never built without a user namespace";
}

TEST(SpawnWire, TruncatedRequestsAreRefused) {
  SpawnRequest req;
  req.argv = {"/bin/echo", "hello"};
  req.env = {"A=1"};
  std::vector<int> fds;
  auto bytes = encode_spawn(req, fds);
  ASSERT_TRUE(bytes.ok());
  for (size_t cut = sizeof(uint32_t); cut < bytes->size(); ++cut) {
    Decoded d;
    decode(bytes->substr(0, cut), fds, d);
    EXPECT_NE(d.error, nullptr) << "a request cut at " << cut << " bytes was accepted";
  }
}

TEST(SpawnWire, BadRequestsAreRefusedBeforeSending) {
  std::vector<int> fds;
  EXPECT_FALSE(encode_spawn(SpawnRequest{}, fds).ok()) << "empty argv";
  SpawnRequest huge;
  huge.argv = {"/bin/true", std::string(kMaxRequestBytes, 'x')};
  EXPECT_EQ(encode_spawn(huge, fds).error().code, Errc::kTooLarge);
}

}  // namespace
}  // namespace ember::sandbox::wire
