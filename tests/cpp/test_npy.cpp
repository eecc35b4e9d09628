// The example's strict .npy reader (examples/cpp/npy.h).
#include <gtest/gtest.h>

#include <cstring>

#include "cache_writer.h"
#include "e3dmm/errors.h"
#include "npy.h"

namespace {

// A version-1.0 .npy file as numpy.save writes it: header padded with spaces to 64 bytes.
std::vector<uint8_t> npy_bytes(const std::string& dict, const std::vector<float>& data, int major = 1) {
  std::string h = dict;
  const size_t pre = major == 1 ? 10 : 12;
  while ((pre + h.size() + 1) % 64) h += ' ';
  h += '\n';
  std::vector<uint8_t> b = {0x93, 'N', 'U', 'M', 'P', 'Y', (uint8_t)major, 0};
  const uint32_t l = (uint32_t)h.size();
  b.push_back(l & 0xff);
  b.push_back((l >> 8) & 0xff);
  if (major != 1) {
    b.push_back((l >> 16) & 0xff);
    b.push_back(l >> 24);
  }
  b.insert(b.end(), h.begin(), h.end());
  const uint8_t* d = reinterpret_cast<const uint8_t*>(data.data());
  b.insert(b.end(), d, d + 4 * data.size());
  return b;
}

void expect_npy_error(const std::string& path, const std::string& field) {
  try {
    npy::load_float32(path);
    ADD_FAILURE() << "expected InvalidInput naming " << field;
  } catch (const e3dmm::InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(Npy, ReadsNumpyFloat32) {
  testutil::TempDir dir;
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  testutil::write_file(dir.file("a.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", v));
  npy::Array a = npy::load_float32(dir.file("a.npy"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.data, v);
  testutil::write_file(dir.file("b.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", v, 2));
  a = npy::load_float32(dir.file("b.npy"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{6}));
}

TEST(Npy, RejectsEverythingElse) {
  testutil::TempDir dir;
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  const std::string p = dir.file("x.npy");
  testutil::write_file(p, npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", v));
  expect_npy_error(p, "descr");
  testutil::write_file(p, npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", v));
  expect_npy_error(p, "fortran_order");
  testutil::write_file(p, npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }", v));
  expect_npy_error(p, "data");  // truncated
  testutil::write_file(p, npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999, 2), }", v));
  expect_npy_error(p, "shape");
  std::vector<uint8_t> b = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", v);
  b[6] = 9;
  testutil::write_file(p, b);
  expect_npy_error(p, "version");
  testutil::write_file(p, {'P', 'K', 3, 4});
  expect_npy_error(p, "magic");
  expect_npy_error(dir.file("missing.npy"), "file");
}
