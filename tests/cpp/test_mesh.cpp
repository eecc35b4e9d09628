// PLY / OBJ writers: exact bytes, atomic replacement, typed errors and no partial files.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>

#include "cache_writer.h"
#include "e3dmm/errors.h"
#include "e3dmm/mesh.h"

namespace {

// Two vertices worth checking by hand, and one triangle.
std::vector<uint8_t> two_records() {
  std::vector<uint8_t> r(3 * 15);
  const float xyz[3][3] = {{1.5f, -0.25f, 100.f}, {0.1f, 3.f, -0.f}, {1e-8f, 123456.789f, 2.f}};
  const uint8_t rgb[3][3] = {{255, 0, 7}, {1, 2, 3}, {9, 99, 199}};
  for (int v = 0; v < 3; ++v) {
    std::memcpy(&r[v * 15], xyz[v], 12);
    std::memcpy(&r[v * 15 + 12], rgb[v], 3);
  }
  return r;
}
const std::vector<int32_t> kFaces = {0, 1, 2, 2, 1, 0};

const char* kHeaderTail =
    "element vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
    "property uchar red\nproperty uchar green\nproperty uchar blue\n"
    "element face 2\nproperty list uchar int vertex_indices\nend_header\n";

std::string slurp(const std::string& path) {
  const std::vector<uint8_t> b = testutil::read_file(path);
  return std::string(b.begin(), b.end());
}

}  // namespace

TEST(Mesh, BinaryPlyBytes) {
  const std::vector<uint8_t> r = two_records();
  const std::string got = e3dmm::ply_bytes(r.data(), 3, kFaces.data(), 2, e3dmm::PlyFormat::BinaryLittleEndian,
                                           {"hello", "synthetic model"});
  std::string want = std::string("ply\nformat binary_little_endian 1.0\ncomment hello\ncomment synthetic model\n") +
                     kHeaderTail;
  want.append(reinterpret_cast<const char*>(r.data()), r.size());
  for (int t = 0; t < 2; ++t) {
    want.push_back(3);
    want.append(reinterpret_cast<const char*>(&kFaces[3 * t]), 12);
  }
  EXPECT_EQ(got, want);
}

TEST(Mesh, AsciiPlyAndObjText) {
  const std::vector<uint8_t> r = two_records();
  EXPECT_EQ(e3dmm::ply_bytes(r.data(), 3, kFaces.data(), 2, e3dmm::PlyFormat::Ascii),
            std::string("ply\nformat ascii 1.0\n") + kHeaderTail +
                "1.5 -0.25 100 255 0 7\n"
                "0.100000001 3 -0 1 2 3\n"
                "9.99999994e-09 123456.789 2 9 99 199\n"
                "3 0 1 2\n3 2 1 0\n");
  testutil::TempDir dir;
  e3dmm::write_obj(dir.file("m.obj"), r.data(), 3, kFaces.data(), 2, {"c1"});
  EXPECT_EQ(slurp(dir.file("m.obj")),
            "# c1\n"
            "v 1.5 -0.25 100 1.000000 0.000000 0.027451\n"
            "v 0.100000001 3 -0 0.003922 0.007843 0.011765\n"
            "v 9.99999994e-09 123456.789 2 0.035294 0.388235 0.780392\n"
            "f 1 2 3\nf 3 2 1\n");
}

TEST(Mesh, WritePlyIsPlyBytesAndLeavesNoTemporary) {
  testutil::TempDir dir;
  const std::vector<uint8_t> r = two_records();
  for (auto fmt : {e3dmm::PlyFormat::BinaryLittleEndian, e3dmm::PlyFormat::Ascii}) {
    e3dmm::write_ply(dir.file("m.ply"), r.data(), 3, kFaces.data(), 2, fmt, {"x"});
    EXPECT_EQ(slurp(dir.file("m.ply")), e3dmm::ply_bytes(r.data(), 3, kFaces.data(), 2, fmt, {"x"}));
    EXPECT_EQ(dir.list(), std::vector<std::string>{"m.ply"});
  }
  // The file gets normal permissions (umask), not mkstemp's 0600.
  const mode_t old = umask(022);
  e3dmm::write_ply(dir.file("p.ply"), r.data(), 3, kFaces.data(), 2);
  umask(old);
  struct stat st;
  ASSERT_EQ(stat(dir.file("p.ply").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
}

TEST(Mesh, UnwritablePathsGiveTypedErrorsAndNoFile) {
  testutil::TempDir dir;
  const std::vector<uint8_t> r = two_records();
  const std::string missing = dir.file("no_such_folder/m.ply");
  try {
    e3dmm::write_ply(missing, r.data(), 3, kFaces.data(), 2);
    FAIL() << "wrote into a missing folder";
  } catch (const e3dmm::InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("folder"), std::string::npos) << e.what();
  }
  EXPECT_THROW(e3dmm::write_ply(dir.path, r.data(), 3, kFaces.data(), 2), e3dmm::InvalidInput);  // a folder
  EXPECT_THROW(e3dmm::write_obj(missing, r.data(), 3, kFaces.data(), 2), e3dmm::InvalidInput);
  EXPECT_TRUE(dir.list().empty());
  if (geteuid() != 0) {  // root ignores folder permissions
    ASSERT_EQ(mkdir(dir.file("ro").c_str(), 0555), 0);
    EXPECT_THROW(e3dmm::write_ply(dir.file("ro/m.ply"), r.data(), 3, kFaces.data(), 2), e3dmm::InvalidInput);
    EXPECT_EQ(access(dir.file("ro/m.ply").c_str(), F_OK), -1);
  }
}

TEST(Mesh, BadInputLeavesTheOldFileUntouched) {
  testutil::TempDir dir;
  std::vector<uint8_t> r = two_records();
  const std::string path = dir.file("m.ply");
  testutil::write_file(path, {'o', 'l', 'd'});
  const std::vector<int32_t> bad_faces = {0, 1, 3};
  EXPECT_THROW(e3dmm::write_ply(path, r.data(), 3, bad_faces.data(), 1), e3dmm::InvalidInput);
  EXPECT_THROW(e3dmm::write_ply(path, r.data(), 3, kFaces.data(), 2, e3dmm::PlyFormat::Ascii, {"two\nlines"}),
               e3dmm::InvalidInput);
  EXPECT_THROW(e3dmm::write_ply(path, r.data(), 3, kFaces.data(), 2, e3dmm::PlyFormat::Ascii, {"caf\xc3\xa9"}),
               e3dmm::InvalidInput);
  EXPECT_THROW(e3dmm::write_ply(path, r.data(), 0, nullptr, 0), e3dmm::InvalidInput);
  const float inf = INFINITY;
  std::memcpy(&r[15 + 4], &inf, 4);
  try {
    e3dmm::write_obj(path, r.data(), 3, kFaces.data(), 2);
    FAIL() << "Inf vertex accepted";
  } catch (const e3dmm::InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find("vertex 1"), std::string::npos) << e.what();
  }
  EXPECT_EQ(slurp(path), "old");
  EXPECT_EQ(dir.list(), std::vector<std::string>{"m.ply"});
}

TEST(Mesh, FailureWhileWritingRemovesTheTemporary) {
  // A file-size limit makes write() fail part way, as a full disk would.
  testutil::TempDir dir;
  const int64_t n = 2000;
  std::vector<uint8_t> r(n * 15, 0);
  const std::vector<int32_t> faces = {0, 1, 2};
  struct rlimit old;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);  // get EFBIG instead of a signal
  struct rlimit small = old;
  small.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  bool threw_backend = false;
  try {
    e3dmm::write_ply(dir.file("big.ply"), r.data(), n, faces.data(), 1);
  } catch (const e3dmm::BackendError& e) {
    threw_backend = std::string(e.what()).find("big.ply") != std::string::npos;
  }
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, old_handler);
  EXPECT_TRUE(threw_backend);
  EXPECT_TRUE(dir.list().empty());
}
