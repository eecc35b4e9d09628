// MorphableModel::load: a valid cache round-trips; every kind of bad file gives a
// ModelFileError naming the file and the field (and nothing crashes).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <functional>
#include <random>

#include "cache_writer.h"
#include "e3dmm/decoder.h"
#include "e3dmm/errors.h"
#include "e3dmm/model.h"

using e3dmm::MorphableModel;
using testutil::TinyModel;

namespace {

// Loads `path` and checks the error's type and that its message names every part.
void expect_model_error(const std::string& path, const std::vector<std::string>& parts) {
  try {
    MorphableModel::load(path);
    ADD_FAILURE() << "expected ModelFileError for " << path << ", load succeeded";
  } catch (const e3dmm::ModelFileError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
    for (const std::string& part : parts) EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
  }
}

}  // namespace

TEST(ModelCache, LoadsWhatTheSpecWriterWrote) {
  testutil::TempDir dir;
  const TinyModel t = testutil::make_model(37, 50, 5, 6, 1);
  const std::string path = dir.file("tiny.e3dmm");
  testutil::write_file(path, testutil::cache_bytes(t));
  const MorphableModel m = MorphableModel::load(path);
  EXPECT_EQ(m.path(), path);
  EXPECT_EQ(m.num_vertices(), 37);
  EXPECT_EQ(m.num_faces(), 50);
  EXPECT_EQ(m.shape_components(), 5);
  EXPECT_EQ(m.tex_components(), 6);
  EXPECT_TRUE(m.synthetic());
  EXPECT_EQ(m.name(), "tiny \xc3\xa9 test");  // the \u00e9 escape decoded to UTF-8
  EXPECT_EQ(m.metadata_json(), t.metadata);
  EXPECT_EQ(std::vector<float>(m.shape_mean(), m.shape_mean() + 3 * 37), t.shape_mean);
  EXPECT_EQ(std::vector<float>(m.shape_basis(), m.shape_basis() + 5 * 3 * 37), t.shape_basis);
  EXPECT_EQ(std::vector<float>(m.shape_sigma(), m.shape_sigma() + 5), t.shape_sigma);
  EXPECT_EQ(std::vector<float>(m.tex_mean(), m.tex_mean() + 3 * 37), t.tex_mean);
  EXPECT_EQ(std::vector<float>(m.tex_basis(), m.tex_basis() + 6 * 3 * 37), t.tex_basis);
  EXPECT_EQ(std::vector<float>(m.tex_sigma(), m.tex_sigma() + 6), t.tex_sigma);
  EXPECT_EQ(std::vector<int32_t>(m.faces(), m.faces() + 150), t.faces);
  ASSERT_EQ(m.num_landmarks(), 68);
  EXPECT_EQ(std::vector<int32_t>(m.landmarks(), m.landmarks() + 68), t.landmarks);
  const e3dmm::CoeffLayout l = m.default_layout();
  EXPECT_EQ(l.stride, 11);
  EXPECT_EQ(l.shape_offset, 0);
  EXPECT_EQ(l.tex_offset, 5);
}

TEST(ModelCache, LandmarksAreOptionalAndTheModelMoves) {
  testutil::TempDir dir;
  TinyModel t = testutil::make_model(10, 4, 2, 3, 2, false);
  t.metadata = "{\"format\":\"e3dmm-cache\",\"synthetic\":false,\"name\":\"x\",\"source\":\"y\"}";
  testutil::write_file(dir.file("a.e3dmm"), testutil::cache_bytes(t));
  MorphableModel m = MorphableModel::load(dir.file("a.e3dmm"));
  EXPECT_EQ(m.landmarks(), nullptr);
  EXPECT_EQ(m.num_landmarks(), 0);
  EXPECT_FALSE(m.synthetic());
  const float* mean = m.shape_mean();
  MorphableModel moved = std::move(m);
  EXPECT_EQ(moved.shape_mean(), mean);  // moving keeps the mapping
}

TEST(ModelCache, MissingFolderAndNonFile) {
  testutil::TempDir dir;
  expect_model_error(dir.file("nope.e3dmm"), {"file", "expected"});
  expect_model_error(dir.path, {"file", "a folder"});
}

TEST(ModelCache, ForeignFile) {
  testutil::TempDir dir;
  // A zip header, an empty file, a short text file: all "not a cache", named by the magic.
  testutil::write_file(dir.file("zip.e3dmm"), {'P', 'K', 3, 4, 20, 0, 0, 0, 8, 0, 0, 0});
  expect_model_error(dir.file("zip.e3dmm"), {"magic", "E3DMMBIN", "PK\\x03\\x04"});
  testutil::write_file(dir.file("empty.e3dmm"), {});
  expect_model_error(dir.file("empty.e3dmm"), {"magic", "0 bytes"});
  std::vector<uint8_t> npy(200, ' ');
  std::memcpy(npy.data(), "\x93NUMPY", 6);
  testutil::write_file(dir.file("npy.e3dmm"), npy);
  expect_model_error(dir.file("npy.e3dmm"), {"magic"});
}

TEST(ModelCache, TruncatedAtEveryRegion) {
  testutil::TempDir dir;
  const std::vector<uint8_t> good = testutil::cache_bytes(testutil::make_model(20, 10, 3, 3, 3));
  // Cut inside the header, the table, the metadata, an array, and the last byte.
  for (size_t cut : {size_t(8), size_t(40), size_t(64 + 64 * 3), size_t(64 + 64 * 8 + 10), good.size() / 2,
                     good.size() - 1}) {
    SCOPED_TRACE("cut at " + std::to_string(cut));
    std::vector<uint8_t> b(good.begin(), good.begin() + cut);
    const std::string path = dir.file("cut.e3dmm");
    testutil::write_file(path, b);
    expect_model_error(path, {cut < 64 ? "header" : "file_nbytes"});
  }
  std::vector<uint8_t> padded = good;
  padded.resize(good.size() + 64, 0);  // extended: also a size mismatch
  testutil::write_file(dir.file("pad.e3dmm"), padded);
  expect_model_error(dir.file("pad.e3dmm"), {"file_nbytes", std::to_string(good.size() + 64)});
}

struct BadCase {
  const char* what;
  std::function<void(std::vector<uint8_t>*)> mutate;
  std::vector<std::string> parts;
};

TEST(ModelCache, InconsistentHeaderAndTable) {
  using namespace testutil;
  const TinyModel t = make_model(20, 10, 3, 4, 4);
  const std::vector<uint8_t> good = cache_bytes(t);
  const uint64_t size = good.size();
  // Record indices: 0 shape_mean, 1 shape_basis, 2 shape_sigma, 3 tex_mean, 4 tex_basis,
  // 5 tex_sigma, 6 faces, 7 landmarks. Field offsets: 24 dtype, 28 ndim, 32 dim0, 40 dim1, 48 offset, 56 nbytes.
  const std::vector<BadCase> cases = {
      {"version 2", [](auto* b) { put_u32(b, 8, 2); }, {"version", "expected 1", "found 2"}},
      {"array_count too large", [](auto* b) { put_u32(b, 12, 1000000); }, {"array_count", "1000000"}},
      {"array_count huge", [](auto* b) { put_u32(b, 12, 0xffffffffu); }, {"array_count"}},
      {"metadata past end", [size](auto* b) { put_u64(b, 24, size); }, {"metadata"}},
      {"metadata offset overflow", [](auto* b) { put_u64(b, 16, ~0ull - 3); }, {"metadata"}},
      {"misaligned array", [](auto* b) { put_u64(b, rec(1, 48), get_u64(*b, rec(1, 48)) + 4); },
       {"shape_basis", "offset", "multiple of 64"}},
      {"array past the end", [size](auto* b) { put_u64(b, rec(4, 48), (size / 64) * 64); },
       {"tex_basis", "offset/nbytes"}},
      {"array offset overflow", [](auto* b) { put_u64(b, rec(4, 48), ~0ull - 63); }, {"tex_basis", "offset"}},
      {"array inside the table", [](auto* b) { put_u64(b, rec(0, 48), 64); }, {"shape_mean", "array table"}},
      {"nbytes inconsistent", [](auto* b) { put_u64(b, rec(2, 56), 8); }, {"shape_sigma", "nbytes", "found 8"}},
      {"dims overflow", [](auto* b) { put_u64(b, rec(1, 32), 1ull << 62); }, {"shape_basis", "dims", "4611686018427387904"}},
      {"unknown dtype", [](auto* b) { put_u32(b, rec(3, 24), 9); }, {"tex_mean", "dtype", "found 9"}},
      {"wrong dtype", [](auto* b) { put_u32(b, rec(6, 24), 1); }, {"faces", "dtype", "3 (int32)", "found 1"}},
      {"ndim 3", [](auto* b) { put_u32(b, rec(0, 28), 3); }, {"shape_mean", "ndim"}},
      {"ndim 1 with dim1", [](auto* b) { put_u64(b, rec(5, 40), 2); put_u64(b, rec(5, 56), 32); },
       {"tex_sigma", "dim1"}},
      {"missing faces",  // the landmarks record replaces faces', and the table shrinks to 7 records
       [](auto* b) { std::memcpy(&(*b)[rec(6, 0)], &(*b)[rec(7, 0)], 64); put_u32(b, 12, 7); },
       {"'faces'", "present (required)"}},
      {"unknown name", [](auto* b) { std::memcpy(&(*b)[rec(6, 0)], "facez", 5); },
       {"record 6 name", "one of shape_mean", "\"facez\""}},
      {"duplicate name", [](auto* b) { std::memcpy(&(*b)[rec(5, 0)], "tex_basis\0", 10); },
       {"tex_basis", "a second record"}},
      {"garbage name", [](auto* b) { (*b)[rec(2, 3)] = 0x01; }, {"record 2 name", "sha\\x01e_sigma"}},
      {"N not a multiple of 3", [](auto* b) { put_u64(b, rec(0, 32), 59); put_u64(b, rec(0, 56), 236); },
       {"shape_mean", "3N"}},
      {"tex_mean length", [](auto* b) { put_u64(b, rec(3, 32), 57); put_u64(b, rec(3, 56), 228); },
       {"tex_mean", "[60]", "[57]"}},
      {"shape_sigma vs Ks", [](auto* b) { put_u64(b, rec(2, 32), 2); put_u64(b, rec(2, 56), 8); },
       {"shape_sigma", "Ks"}},
      {"tex_basis columns", [](auto* b) { put_u64(b, rec(4, 32), 8); put_u64(b, rec(4, 40), 30); },
       {"tex_basis", "[Kt, 60]"}},
      {"faces not [F, 3]", [](auto* b) { put_u64(b, rec(6, 32), 15); put_u64(b, rec(6, 40), 2); },
       {"faces", "[F, 3]"}},
  };
  testutil::TempDir dir;
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.what);
    std::vector<uint8_t> b = good;
    c.mutate(&b);
    const std::string path = dir.file("bad.e3dmm");
    write_file(path, b);
    expect_model_error(path, c.parts);
  }
}

TEST(ModelCache, IndexRangesAndMetadata) {
  using namespace testutil;
  testutil::TempDir dir;
  struct Case {
    const char* what;
    std::function<void(TinyModel*)> mutate;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {"face index N", [](TinyModel* m) { m->faces[7] = (int32_t)m->n; }, {"faces'[2, 1]", "[0, 20)", "found 20"}},
      {"face index -1", [](TinyModel* m) { m->faces[0] = -1; }, {"faces'[0, 0]", "found -1"}},
      {"landmark index", [](TinyModel* m) { m->landmarks[67] = 1000; }, {"landmarks'[67]", "found 1000"}},
      {"metadata not JSON", [](TinyModel* m) { m->metadata = "{\"format\": \"e3dmm-cache\","; }, {"metadata", "JSON"}},
      {"metadata an array", [](TinyModel* m) { m->metadata = "[1, 2]"; }, {"metadata", "object"}},
      {"metadata trailing bytes", [](TinyModel* m) { m->metadata += "x"; }, {"metadata", "end"}},
      {"metadata deep nesting", [](TinyModel* m) { m->metadata = "{\"a\":" + std::string(100000, '[') + "}"; },
       {"metadata", "nesting depth"}},
      {"format key", [](TinyModel* m) {
         m->metadata = "{\"format\":\"other\",\"synthetic\":true,\"name\":\"x\",\"source\":\"y\"}"; },
       {"\"format\"", "e3dmm-cache", "other"}},
      {"synthetic not bool", [](TinyModel* m) {
         m->metadata = "{\"format\":\"e3dmm-cache\",\"synthetic\":1,\"name\":\"x\",\"source\":\"y\"}"; },
       {"\"synthetic\"", "boolean"}},
      {"metadata not UTF-8", [](TinyModel* m) {
         m->metadata = "{\"format\":\"e3dmm-cache\",\"synthetic\":true,\"name\":\"\xff\",\"source\":\"y\"}"; },
       {"metadata", "UTF-8", "byte 49"}},
      {"zero shape components", [](TinyModel* m) {
         m->ks = 0; m->shape_basis.clear(); m->shape_sigma.clear(); }, {"shape_basis", "dims", "(0, 60)"}},
      {"source missing", [](TinyModel* m) {
         m->metadata = "{\"format\":\"e3dmm-cache\",\"synthetic\":true,\"name\":\"x\"}"; },
       {"\"source\"", "missing"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    TinyModel t = make_model(20, 10, 3, 4, 5);
    c.mutate(&t);
    write_file(dir.file("bad.e3dmm"), cache_bytes(t));
    expect_model_error(dir.file("bad.e3dmm"), c.parts);
  }
}

TEST(ModelCache, DecodeParamsAndFloat16Copy) {
  testutil::TempDir dir;
  testutil::write_file(dir.file("m.e3dmm"), testutil::cache_bytes(testutil::make_model(12, 3, 4, 2, 6)));
  MorphableModel m = MorphableModel::load(dir.file("m.e3dmm"));
  std::vector<float> coeffs(6, 0.5f);
  e3dmm::DecodeParams p = m.decode_params(coeffs.data(), 1);
  EXPECT_EQ(p.shape_basis, m.shape_basis());
  EXPECT_EQ(p.coeff_stride, 6);
  EXPECT_EQ(p.tex_offset, 4);
  EXPECT_THROW(m.decode_params(coeffs.data(), 1, m.default_layout(), e3dmm::BasisType::Float16), e3dmm::InvalidInput);
  m.make_float16_bases();
  EXPECT_TRUE(m.has_float16_bases());
  p = m.decode_params(coeffs.data(), 1, m.default_layout(), e3dmm::BasisType::Float16);
  EXPECT_EQ(p.basis_type, e3dmm::BasisType::Float16);
  EXPECT_NE(p.shape_basis, static_cast<const void*>(m.shape_basis()));
}

TEST(ModelCache, RandomCorruptionNeverCrashes) {
  // Flip random bytes of the header, table and metadata (where a reader can go wrong):
  // every outcome is either a valid model or a ModelFileError. Run under ASan/UBSan too.
  testutil::TempDir dir;
  const std::vector<uint8_t> good = testutil::cache_bytes(testutil::make_model(16, 8, 2, 3, 9));
  std::mt19937 rng(1234);
  const size_t hot = 64 + 64 * 8 + 200;  // header + 8 records + most of the metadata
  int rejected = 0;
  for (int iter = 0; iter < 400; ++iter) {
    std::vector<uint8_t> b = good;
    const int flips = 1 + (int)(rng() % 4);
    for (int k = 0; k < flips; ++k) b[rng() % hot] ^= (uint8_t)(1u << (rng() % 8));
    const std::string path = dir.file("fuzz.e3dmm");
    testutil::write_file(path, b);
    try {
      const MorphableModel m = MorphableModel::load(path);
      ASSERT_GT(m.num_vertices(), 0);  // accepted: then it must be usable
      for (int64_t i = 0; i < 3 * m.num_faces(); ++i) ASSERT_LT(m.faces()[i], m.num_vertices());
    } catch (const e3dmm::ModelFileError&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 300);  // almost every flip in these regions must be caught
}
