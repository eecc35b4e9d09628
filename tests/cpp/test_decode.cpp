// Decoding through the public API against a plain double-precision reference written here.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#if defined(E3DMM_WITH_CUDA)
#include <cuda_runtime.h>
#endif

#include "cache_writer.h"
#include "e3dmm/decode.h"
#include "e3dmm/decoder.h"
#include "e3dmm/errors.h"
#include "e3dmm/model.h"

using testutil::TinyModel;

namespace {

struct Reference {
  std::vector<double> vertices;  // [B, N, 3]
  std::vector<double> colors;    // [B, N, 3] before clamping and truncation
};

// S = muS + sum_k alpha_k * PS[k], T = muT + sum_k beta_k * PT[k], in double. `round_half`
// rounds each basis element to float16 first, so the reference matches a float16 decode.
Reference reference(const TinyModel& m, const std::vector<float>& coeffs, int64_t batch, int stride,
                    int shape_offset, int tex_offset, float (*round_basis)(float) = nullptr) {
  const int64_t n3 = 3 * m.n;
  Reference r;
  r.vertices.resize(batch * n3);
  r.colors.resize(batch * n3);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < n3; ++c) {
      double s = m.shape_mean[c], t = m.tex_mean[c];
      for (int k = 0; k < m.ks; ++k) {
        const float e = m.shape_basis[k * n3 + c];
        s += (double)coeffs[b * stride + shape_offset + k] * (round_basis ? round_basis(e) : e);
      }
      for (int k = 0; k < m.kt; ++k) {
        const float e = m.tex_basis[k * n3 + c];
        t += (double)coeffs[b * stride + tex_offset + k] * (round_basis ? round_basis(e) : e);
      }
      r.vertices[b * n3 + c] = s;
      r.colors[b * n3 + c] = t;
    }
  return r;
}

// The release's colour rule on the exact value; a float32 sum may land on the other side of
// an integer, so values within `slack` of a boundary may differ by one.
void expect_colors(const std::vector<double>& exact, const uint8_t* got, double slack) {
  for (size_t i = 0; i < exact.size(); ++i) {
    const double c = std::min(std::max(exact[i], 0.0), 255.0);
    const int want = (int)c;
    if (got[i] != want) {
      const bool near_boundary = std::fabs(c - std::round(c)) < slack && std::abs((int)got[i] - want) == 1;
      ASSERT_TRUE(near_boundary) << "color " << i << ": exact " << exact[i] << ", got " << (int)got[i];
    }
  }
}

void expect_vertices(const std::vector<double>& exact, const float* got, double tol) {
  for (size_t i = 0; i < exact.size(); ++i)
    ASSERT_NEAR(got[i], exact[i], tol * (1.0 + std::fabs(exact[i]))) << "vertex component " << i;
}

std::vector<float> random_coeffs(int64_t batch, int stride, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> c(batch * stride);
  for (float& x : c) x = g(rng);
  return c;
}

float to_half_and_back(float f) {
  // Independent of the library: round to 11 significant bits (nearest even) for normal halves.
  if (f == 0.f || !std::isfinite(f)) return f;
  int e;
  const double m = std::frexp((double)f, &e);   // f = m * 2^e, 0.5 <= |m| < 1
  const double scaled = std::nearbyint(m * 2048.0);  // 11 bits; default rounding mode is to nearest even
  return (float)std::ldexp(scaled / 2048.0, e);
}

class DecodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // N not a multiple of the CPU kernel's 128-vertex block; K not a multiple of 4.
    tiny_ = testutil::make_model(300, 100, 7, 5, 11);
    path_ = dir_.file("m.e3dmm");
    testutil::write_file(path_, testutil::cache_bytes(tiny_));
  }
  testutil::TempDir dir_;
  TinyModel tiny_;
  std::string path_;
};

}  // namespace

TEST_F(DecodeTest, CpuMatchesDoubleReferenceForSeveralBatchSizes) {
  const e3dmm::Decoder dec = e3dmm::Decoder::load(path_);
  const int64_t n3 = 3 * tiny_.n;
  for (int64_t batch : {1, 3, 8, 17}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    const std::vector<float> coeffs = random_coeffs(batch, 12, 100 + (unsigned)batch);
    std::vector<float> v(batch * n3);
    std::vector<uint8_t> c(batch * n3), rec(batch * tiny_.n * e3dmm::kRecordBytes);
    dec.decode(coeffs.data(), batch, v.data(), c.data(), rec.data());
    const Reference ref = reference(tiny_, coeffs, batch, 12, 0, 7);
    expect_vertices(ref.vertices, v.data(), 1e-5);
    expect_colors(ref.colors, c.data(), 1e-3);
    // Records are the same numbers, interleaved.
    for (int64_t i = 0; i < batch * tiny_.n; ++i) {
      ASSERT_EQ(std::memcmp(&rec[i * 15], &v[3 * i], 12), 0) << "record " << i;
      ASSERT_EQ(std::memcmp(&rec[i * 15 + 12], &c[3 * i], 3), 0) << "record " << i;
    }
  }
}

TEST_F(DecodeTest, SingleRowStreamingOverSeveralWideBlocks) {
  // B = 1 streams 8 basis rows at a time over blocks of up to 12,288 columns: 9,001
  // vertices (27,003 columns) give several blocks per thread and a ragged last one,
  // K = 19 and 17 leave a remainder after the groups of 8.
  const TinyModel big = testutil::make_model(9001, 50, 19, 17, 23);
  const std::string path = dir_.file("big.e3dmm");
  testutil::write_file(path, testutil::cache_bytes(big));
  const e3dmm::Decoder dec = e3dmm::Decoder::load(path);
  const int64_t n3 = 3 * big.n;
  const std::vector<float> coeffs = random_coeffs(1, 36, 5);
  std::vector<float> v(n3);
  std::vector<uint8_t> c(n3);
  dec.decode(coeffs.data(), 1, v.data(), c.data(), nullptr);
  const Reference ref = reference(big, coeffs, 1, 36, 0, 19);
  expect_vertices(ref.vertices, v.data(), 1e-5);
  expect_colors(ref.colors, c.data(), 1e-3);
}

TEST_F(DecodeTest, CustomLayoutAndCudaBodyOnHost) {
  const e3dmm::MorphableModel m = e3dmm::MorphableModel::load(path_);
  // A row with padding: beta first, then alpha, stride 20.
  const e3dmm::CoeffLayout layout{20, 8, 1};
  const int64_t batch = 5, n3 = 3 * tiny_.n;
  const std::vector<float> coeffs = random_coeffs(batch, 20, 7);
  const Reference ref = reference(tiny_, coeffs, batch, 20, 8, 1);
  std::vector<float> v(batch * n3);
  std::vector<uint8_t> c(batch * n3);
  e3dmm::DecodeParams p = m.decode_params(coeffs.data(), batch, layout);
  p.vertices = v.data();
  p.colors = c.data();
  e3dmm::decode_cpu(p, 1);
  expect_vertices(ref.vertices, v.data(), 1e-5);
  expect_colors(ref.colors, c.data(), 1e-3);
  std::fill(v.begin(), v.end(), 0.f);
  e3dmm::decode_cuda_body_on_host(p);  // the GPU kernel's per-thread body over the whole index space
  expect_vertices(ref.vertices, v.data(), 1e-5);
  expect_colors(ref.colors, c.data(), 1e-3);
}

TEST_F(DecodeTest, Float16BasesMatchAHalfRoundedReference) {
  const e3dmm::Decoder dec = e3dmm::Decoder::load(path_, e3dmm::BasisType::Float16, 2);
  ASSERT_TRUE(dec.model().has_float16_bases());
  const int64_t batch = 4, n3 = 3 * tiny_.n;
  const std::vector<float> coeffs = random_coeffs(batch, 12, 9);
  std::vector<float> v(batch * n3);
  dec.decode(coeffs.data(), batch, v.data(), nullptr, nullptr);
  // Against the half-rounded basis the only error left is float32 accumulation...
  expect_vertices(reference(tiny_, coeffs, batch, 12, 0, 7, to_half_and_back).vertices, v.data(), 1e-5);
  // ...and against the float32 basis the float16 rounding shows (so the copy really is half precision).
  const Reference exact = reference(tiny_, coeffs, batch, 12, 0, 7);
  double max_err = 0;
  for (size_t i = 0; i < v.size(); ++i) max_err = std::max(max_err, std::fabs(v[i] - exact.vertices[i]));
  EXPECT_GT(max_err, 1e-4);
}

TEST_F(DecodeTest, BadInputIsRejectedBeforeAnythingIsWritten) {
  const e3dmm::Decoder dec = e3dmm::Decoder::load(path_);
  const int64_t n3 = 3 * tiny_.n;
  std::vector<float> coeffs = random_coeffs(2, 12, 3);
  std::vector<float> v(2 * n3, -7.f);
  coeffs[12 + 9] = std::nanf("");
  try {
    dec.decode(coeffs.data(), 2, v.data(), nullptr, nullptr);
    FAIL() << "NaN coefficient accepted";
  } catch (const e3dmm::InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find("coeffs[1, 9]"), std::string::npos) << e.what();
  }
  for (float x : v) ASSERT_EQ(x, -7.f);
  coeffs[12 + 9] = 0.f;
  EXPECT_THROW(dec.decode(coeffs.data(), 2, nullptr, nullptr, nullptr), e3dmm::InvalidInput);  // no output
  EXPECT_THROW(dec.decode(coeffs.data(), 0, v.data(), nullptr, nullptr), e3dmm::InvalidInput);  // batch 0
  EXPECT_THROW(dec.decode(coeffs.data(), 1, e3dmm::CoeffLayout{10, 0, 7}, v.data(), nullptr, nullptr),
               e3dmm::InvalidInput);  // beta would run past the row
}

TEST_F(DecodeTest, DecodeToPlyWritesTheDecodedRecords) {
  const e3dmm::Decoder dec = e3dmm::Decoder::load(path_);
  const std::vector<float> coeffs = random_coeffs(1, 12, 4);
  std::vector<uint8_t> rec(tiny_.n * e3dmm::kRecordBytes);
  dec.decode(coeffs.data(), 1, nullptr, nullptr, rec.data());
  dec.decode_to_ply(coeffs.data(), dir_.file("one.ply"), e3dmm::PlyFormat::BinaryLittleEndian, {"row 0"});
  const std::string want = e3dmm::ply_bytes(rec.data(), tiny_.n, tiny_.faces.data(), tiny_.f,
                                            e3dmm::PlyFormat::BinaryLittleEndian, {"row 0"});
  const std::vector<uint8_t> got = testutil::read_file(dir_.file("one.ply"));
  EXPECT_EQ(std::string(got.begin(), got.end()), want);
  // Decoder::write_ply (prebuilt face block) writes the same bytes as the free function, both formats.
  for (auto fmt : {e3dmm::PlyFormat::BinaryLittleEndian, e3dmm::PlyFormat::Ascii}) {
    dec.write_ply(dir_.file("two.ply"), rec.data(), fmt, {"c"});
    const std::vector<uint8_t> two = testutil::read_file(dir_.file("two.ply"));
    EXPECT_EQ(std::string(two.begin(), two.end()),
              e3dmm::ply_bytes(rec.data(), tiny_.n, tiny_.faces.data(), tiny_.f, fmt, {"c"}));
  }
  // Bad records are refused on this path too, and nothing is written.
  std::vector<uint8_t> bad = rec;
  const float nan = std::nanf("");
  std::memcpy(&bad[15 * 5 + 8], &nan, 4);
  EXPECT_THROW(dec.write_ply(dir_.file("bad.ply"), bad.data()), e3dmm::InvalidInput);
  EXPECT_EQ(testutil::read_file(dir_.file("bad.ply")).size(), 0u);
}

TEST_F(DecodeTest, CudaDecoderMatchesCpuOrSaysUnavailable) {
  e3dmm::MorphableModel m = e3dmm::MorphableModel::load(path_);
  if (e3dmm::cuda_device_count() == 0) {
    // The typed error, not a crash, on machines without a GPU (this CI).
    EXPECT_THROW(e3dmm::CudaDecoder dec(m), e3dmm::Unavailable);
    GTEST_SKIP() << "no CUDA device: the GPU decode itself is not exercised here";
  }
#if defined(E3DMM_WITH_CUDA)
  // Reached only on a machine with a GPU: device decode vs the CPU decode of the same rows.
  const int64_t batch = 19, n3 = 3 * tiny_.n, nrec = batch * tiny_.n * e3dmm::kRecordBytes;
  const std::vector<float> coeffs = random_coeffs(batch, 12, 21);
  e3dmm::CudaDecoder dec(m);
  float* d_coeffs = nullptr;
  float* d_v = nullptr;
  uint8_t* d_rec = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_coeffs), coeffs.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_v), batch * n3 * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_rec), nrec), cudaSuccess);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  cudaMemcpyAsync(d_coeffs, coeffs.data(), coeffs.size() * 4, cudaMemcpyHostToDevice, stream);
  dec.decode(d_coeffs, batch, dec.default_layout(), d_v, nullptr, d_rec, stream);
  dec.synchronize(stream);
  std::vector<float> v(batch * n3);
  std::vector<uint8_t> rec(nrec);
  cudaMemcpy(v.data(), d_v, v.size() * 4, cudaMemcpyDeviceToHost);
  cudaMemcpy(rec.data(), d_rec, rec.size(), cudaMemcpyDeviceToHost);
  const Reference ref = reference(tiny_, coeffs, batch, 12, 0, 7);
  expect_vertices(ref.vertices, v.data(), 1e-5);
  for (int64_t i = 0; i < batch * tiny_.n; ++i) ASSERT_EQ(std::memcmp(&rec[i * 15], &v[3 * i], 12), 0);
  // A NaN is reported by synchronize(), typed.
  const float nan = std::nanf("");
  cudaMemcpy(d_coeffs + 3, &nan, 4, cudaMemcpyHostToDevice);
  dec.decode(d_coeffs, batch, dec.default_layout(), d_v, nullptr, nullptr, stream);
  EXPECT_THROW(dec.synchronize(stream), e3dmm::InvalidInput);
  cudaStreamDestroy(stream);
  cudaFree(d_coeffs);
  cudaFree(d_v);
  cudaFree(d_rec);
#endif
}

// The optional expression term (issue 9): S += expr_mean + sum_k e_k * PE[k], after alpha's
// terms; through decode_cpu (batched and single-row paths) and the CUDA body run on the host.
TEST_F(DecodeTest, ExpressionTermMatchesTheReference) {
  const int ke = 6;
  const int64_t n3 = 3 * tiny_.n;
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> emean(n3), ebasis(ke * n3);
  for (float& x : emean) x = g(rng);
  for (float& x : ebasis) x = 3.f * g(rng);
  const e3dmm::MorphableModel model = e3dmm::MorphableModel::load(path_);
  for (int64_t batch : {1, 3, 9}) {
    const auto layout = model.default_layout();
    const std::vector<float> coeffs = random_coeffs(batch, layout.stride, 40 + (unsigned)batch);
    const std::vector<float> e = random_coeffs(batch, ke, 70 + (unsigned)batch);
    Reference ref = reference(tiny_, coeffs, batch, layout.stride, layout.shape_offset, layout.tex_offset);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t c = 0; c < n3; ++c) {
        double s = emean[c];
        for (int k = 0; k < ke; ++k) s += (double)e[b * ke + k] * ebasis[k * n3 + c];
        ref.vertices[b * n3 + c] += s;
      }
    for (int path = 0; path < 2; ++path) {
      e3dmm::DecodeParams p = model.decode_params(coeffs.data(), batch);
      p.expr_basis = ebasis.data();
      p.expr_mean = emean.data();
      p.expr_components = ke;
      p.expr_coeffs = e.data();
      std::vector<float> v(batch * n3);
      p.vertices = v.data();
      if (path == 0)
        e3dmm::decode_cpu(p, 2);
      else
        e3dmm::decode_cuda_body_on_host(p);
      expect_vertices(ref.vertices, v.data(), 1e-5);
    }
  }
  // Weights without a basis, or a NaN weight: refused, nothing written.
  const std::vector<float> coeffs = random_coeffs(2, model.default_layout().stride, 3);
  std::vector<float> e(2 * ke, 0.f), v(2 * n3, 7.f);
  e3dmm::DecodeParams p = model.decode_params(coeffs.data(), 2);
  p.vertices = v.data();
  p.expr_coeffs = e.data();
  EXPECT_THROW(e3dmm::decode_cpu(p, 1), e3dmm::InvalidInput);  // the tiny model has no expression basis
  p.expr_basis = ebasis.data();
  p.expr_mean = emean.data();
  p.expr_components = ke;
  e[ke + 2] = NAN;
  try {
    e3dmm::decode_cpu(p, 1);
    FAIL() << "a NaN expression weight was accepted";
  } catch (const e3dmm::InvalidInput& err) {
    EXPECT_NE(std::string(err.what()).find("expression[1, 2]"), std::string::npos) << err.what();
  }
  for (float x : v) ASSERT_EQ(x, 7.f);
  e3dmm::Decoder dec(e3dmm::MorphableModel::load(path_));
  EXPECT_THROW(dec.decode(coeffs.data(), 2, v.data(), nullptr, nullptr, e.data()), e3dmm::InvalidInput);
}
