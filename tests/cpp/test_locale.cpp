// The writers under a comma locale (issue 8, section 7): an application that calls
// setlocale(LC_ALL, "") (every Qt program does) under de_DE.UTF-8 must still get ASCII PLY
// and OBJ files whose numbers are exactly Python's "%.9g" / "%.6f" / "%d" (printf in the
// "C" locale), byte for byte. The locale must exist: a missing one is a failure, not a
// skip (.ci/run generates it; locally: localedef -i de_DE -f UTF-8 de_DE.UTF-8).
#include <gtest/gtest.h>

#include <clocale>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <locale>
#include <random>
#include <string>
#include <vector>

#include "cache_writer.h"
#include "e3dmm/decode.h"
#include "e3dmm/errors.h"
#include "e3dmm/mesh.h"

namespace {

constexpr const char* kLocale = "de_DE.UTF-8";

// Switches the C and the C++ global locale to de_DE for the scope; back to "C" after.
struct CommaLocale {
  bool ok = false;
  CommaLocale() {
    ok = std::setlocale(LC_ALL, kLocale) != nullptr;
    if (ok) std::locale::global(std::locale(kLocale));
  }
  ~CommaLocale() {
    std::setlocale(LC_ALL, "C");
    std::locale::global(std::locale::classic());
  }
};

#define REQUIRE_COMMA_LOCALE(guard)                                                                        \
  CommaLocale guard;                                                                                       \
  ASSERT_TRUE(guard.ok) << "locale " << kLocale << " is not installed; generate it with "                  \
                        << "`localedef -i de_DE -f UTF-8 de_DE.UTF-8` (Debian: apt-get install locales)"; \
  {                                                                                                        \
    char probe[16];                                                                                        \
    std::snprintf(probe, sizeof probe, "%.2f", 1.5);                                                       \
    ASSERT_STREQ(probe, "1,50") << "the comma locale is not in effect: this test would prove nothing";     \
  }

// printf in the "C" locale (the reference: what Python's % formatting prints).
std::string c_printf(const char* fmt, double v) {
  std::setlocale(LC_NUMERIC, "C");
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

struct Mesh {
  std::vector<uint8_t> records;
  std::vector<int32_t> faces;
  int64_t n = 0, f = 0;
};

// Awkward values first (signs, tiny, huge, subnormal, integers, the issue's -26.40802), then
// random float32 bit patterns of every exponent.
Mesh awkward_mesh(int64_t n_random) {
  std::vector<float> v = {-26.40802f, 96.9388504f, -0.0f, 0.0f, 1e-7f, 3.4028235e38f, -1.17549435e-38f,
                          1.4e-45f, 123456789.0f, 0.1f, -1.0f, 1e20f, 7.0f, 65504.0f, 2.5f};
  while (v.size() % 3) v.push_back(0.5f);
  std::mt19937 rng(8);
  while ((int64_t)v.size() < 3 * n_random + 15) {
    uint32_t bits = rng();
    float x;
    std::memcpy(&x, &bits, 4);
    if (std::isfinite(x)) v.push_back(x);
  }
  while (v.size() % 3) v.push_back(1.0f);
  Mesh m;
  m.n = (int64_t)v.size() / 3;
  m.records.resize((size_t)m.n * e3dmm::kRecordBytes);
  for (int64_t i = 0; i < m.n; ++i) {
    std::memcpy(&m.records[i * 15], &v[3 * i], 12);
    for (int c = 0; c < 3; ++c) m.records[i * 15 + 12 + c] = (uint8_t)(rng() & 0xff);
  }
  for (int64_t t = 0; t + 2 < m.n; t += 2) m.faces.insert(m.faces.end(), {(int32_t)t, (int32_t)t + 1, (int32_t)t + 2});
  m.f = (int64_t)m.faces.size() / 3;
  return m;
}

// The ASCII PLY body and OBJ text built with printf in the "C" locale, as engine/mesh_io.py formats them.
std::string reference_ply_body(const Mesh& m) {
  std::string s;
  for (int64_t i = 0; i < m.n; ++i) {
    float xyz[3];
    std::memcpy(xyz, &m.records[i * 15], 12);
    for (float x : xyz) s += c_printf("%.9g", x) + " ";
    s += std::to_string(m.records[i * 15 + 12]) + " " + std::to_string(m.records[i * 15 + 13]) + " " +
         std::to_string(m.records[i * 15 + 14]) + "\n";
  }
  for (int64_t t = 0; t < m.f; ++t)
    s += "3 " + std::to_string(m.faces[3 * t]) + " " + std::to_string(m.faces[3 * t + 1]) + " " +
         std::to_string(m.faces[3 * t + 2]) + "\n";
  return s;
}

std::string reference_obj(const Mesh& m) {
  std::string s = "# c\n";
  for (int64_t i = 0; i < m.n; ++i) {
    float xyz[3];
    std::memcpy(xyz, &m.records[i * 15], 12);
    s += "v";
    for (float x : xyz) s += " " + c_printf("%.9g", x);
    for (int c = 0; c < 3; ++c) s += " " + c_printf("%.6f", m.records[i * 15 + 12 + c] / 255.0);
    s += "\n";
  }
  for (int64_t t = 0; t < m.f; ++t)
    s += "f " + std::to_string(m.faces[3 * t] + 1) + " " + std::to_string(m.faces[3 * t + 1] + 1) + " " +
         std::to_string(m.faces[3 * t + 2] + 1) + "\n";
  return s;
}

}  // namespace

TEST(CommaLocale, AsciiPlyIsTheCLocaleText) {
  const Mesh m = awkward_mesh(5000);
  const std::string want = reference_ply_body(m);  // computed in the "C" locale
  REQUIRE_COMMA_LOCALE(guard);
  const std::string got = e3dmm::ply_bytes(m.records.data(), m.n, m.faces.data(), m.f, e3dmm::PlyFormat::Ascii);
  const size_t body = got.find("end_header\n");
  ASSERT_NE(body, std::string::npos);
  EXPECT_EQ(got.substr(body + 11), want);
  EXPECT_EQ(got.find(','), std::string::npos) << "a decimal comma in the PLY";
  EXPECT_NE(got.find("\n-26.40802 96.9388504 -0 "), std::string::npos) << got.substr(body, 200);
}

TEST(CommaLocale, ObjIsTheCLocaleText) {
  const Mesh m = awkward_mesh(2000);
  const std::string want = reference_obj(m);
  REQUIRE_COMMA_LOCALE(guard);
  testutil::TempDir dir;
  e3dmm::write_obj(dir.file("m.obj"), m.records.data(), m.n, m.faces.data(), m.f, {"c"});
  const std::vector<uint8_t> got = testutil::read_file(dir.file("m.obj"));
  EXPECT_EQ(std::string(got.begin(), got.end()), want);
}

TEST(CommaLocale, MessagesAndBuildInfoHaveNoGrouping) {
  const std::string info_c = e3dmm::build_info_json();
  REQUIRE_COMMA_LOCALE(guard);
  EXPECT_EQ(e3dmm::build_info_json(), info_c);  // JSON numbers (e.g. OpenMP 201511), not "201.511"
  e3dmm::DecodeParams p;
  p.num_vertices = 1234567;
  try {
    e3dmm::validate(p);
    ADD_FAILURE() << "validate accepted 1234567 vertices";
  } catch (const e3dmm::InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find("found 1234567"), std::string::npos) << e.what();
  }
}
