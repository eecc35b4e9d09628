// The crop kernel (crop.h) through the public API against a plain reference written here: the
// zero-padded crop built as an array, then OpenCV's half-pixel bilinear resize in double. Runs
// under ASan/UBSan in CI, so the border, corner and extreme-bound cases also prove that no address
// outside the image is formed and no arithmetic overflows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "e3dmm/crop.h"
#include "e3dmm/decode.h"
#include "e3dmm/errors.h"

namespace {

struct Image {
  int64_t h, w;
  std::vector<uint8_t> hwc;  // [h, w, 3] RGB
};

Image random_image(int64_t h, int64_t w, unsigned seed) {
  std::mt19937 rng(seed);
  Image im{h, w, std::vector<uint8_t>((size_t)(h * w * 3))};
  for (auto& v : im.hwc) v = (uint8_t)(rng() & 0xff);
  return im;
}

e3dmm::CropFace hwc_face(const Image& im, int64_t l, int64_t t, int64_t r, int64_t b) {
  e3dmm::CropFace f;
  f.image = im.hwc.data();
  f.height = im.h;
  f.width = im.w;
  f.stride_y = 3 * im.w;
  f.stride_x = 3;
  f.stride_c = 1;
  f.left = l;
  f.top = t;
  f.right = r;
  f.bottom = b;
  return f;
}

// [3, size, size] BGR in double before rounding: the padded crop (zero outside the image), resized
// with src = (j + 0.5) * n / size - 0.5 clamped to [0, n - 1], neighbours clamped to the crop.
std::vector<double> reference(const Image& im, int64_t l, int64_t t, int64_t r, int64_t b, int size) {
  const int64_t nw = r - l, nh = b - t;
  std::vector<double> crop((size_t)(nw * nh * 3), 0.0);
  for (int64_t y = 0; y < nh; ++y)
    for (int64_t x = 0; x < nw; ++x) {
      const int64_t iy = t + y, ix = l + x;
      if (iy < 0 || iy >= im.h || ix < 0 || ix >= im.w) continue;
      for (int c = 0; c < 3; ++c) crop[(size_t)((y * nw + x) * 3 + c)] = im.hwc[(size_t)((iy * im.w + ix) * 3 + c)];
    }
  auto axis = [size](int64_t n, int j, int64_t& i0, int64_t& i1, double& fr) {
    double s = (j + 0.5) * (double)n / size - 0.5;
    s = std::min(std::max(s, 0.0), (double)(n - 1));
    i0 = (int64_t)std::floor(s);
    i1 = std::min(i0 + 1, n - 1);
    fr = s - (double)i0;
  };
  std::vector<double> out((size_t)(3 * size * size));
  for (int oy = 0; oy < size; ++oy)
    for (int ox = 0; ox < size; ++ox) {
      int64_t y0, y1, x0, x1;
      double fy, fx;
      axis(nh, oy, y0, y1, fy);
      axis(nw, ox, x0, x1, fx);
      for (int c = 0; c < 3; ++c) {
        auto at = [&](int64_t y, int64_t x) { return crop[(size_t)((y * nw + x) * 3 + (2 - c))]; };
        out[(size_t)((c * size + oy) * size + ox)] = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x1)) +
                                                     fy * ((1 - fx) * at(y1, x0) + fx * at(y1, x1));
      }
    }
  return out;
}

std::vector<float> run_cpu(const std::vector<e3dmm::CropFace>& faces, int size, int threads = 0) {
  std::vector<float> out(faces.size() * 3 * size * size, -1.0f);
  e3dmm::CropParams p;
  p.faces = faces.data();
  p.batch = (int64_t)faces.size();
  p.size = size;
  p.out = out.data();
  e3dmm::crop_cpu(p, threads);
  return out;
}

struct Case {
  int64_t h, w, l, t, r, b;
  int size;
};

// Borders, corners, larger than the image, tiny crops and images, non-square, other sizes.
const Case kCases[] = {
    {60, 80, 10, 12, 50, 52, 224},     {60, 80, -20, 15, 25, 50, 224},   {60, 80, 60, 15, 100, 50, 224},
    {60, 80, 20, -25, 60, 20, 224},    {60, 80, 20, 40, 60, 90, 224},    {60, 80, -30, -30, 20, 20, 224},
    {60, 80, 70, 50, 95, 75, 224},     {60, 80, -80, -60, 160, 120, 224}, {60, 80, 5, 5, 6, 6, 7},
    {60, 80, 5, 5, 7, 7, 224},         {60, 80, 79, 59, 81, 61, 16},     {1, 1, 0, 0, 1, 1, 224},
    {1, 1, -2, -1, 3, 2, 9},           {1, 9, -3, -4, 12, 5, 33},        {9, 1, -4, -3, 5, 12, 33},
    {37, 53, 0, 0, 53, 37, 1},         {37, 53, 3, 2, 40, 30, 227},      {37, 53, -100, -100, 300, 300, 64},
};

TEST(Crop, MatchesThePaddedCropReference) {
  // Float32 sums and the float64 reference may round a value lying at .5 differently: at most one
  // grey level, on a small share of the values (these random images have no flat areas).
  for (const Case& k : kCases) {
    const Image im = random_image(k.h, k.w, (unsigned)(k.h * 131 + k.l));
    const auto got = run_cpu({hwc_face(im, k.l, k.t, k.r, k.b)}, k.size);
    const auto want = reference(im, k.l, k.t, k.r, k.b, k.size);
    size_t differ = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const double expect = std::min(std::max(std::nearbyint(want[i]), 0.0), 255.0);
      ASSERT_LE(std::fabs(got[i] - expect), 1.0) << "case h=" << k.h << " l=" << k.l << " element " << i;
      ASSERT_EQ(got[i], std::floor(got[i]));  // integers 0..255, like a uint8 resize
      differ += got[i] != expect;
    }
    EXPECT_LE(differ, want.size() / 100 + 1) << "case h=" << k.h << " l=" << k.l;
  }
}

TEST(Crop, EveryElementIsThePerElementBody) {
  const Image im = random_image(41, 29, 7);
  std::vector<e3dmm::CropFace> faces = {hwc_face(im, -5, -7, 20, 30), hwc_face(im, 10, 10, 12, 11),
                                        hwc_face(im, -100, -50, 200, 90)};
  const int size = 19;
  const auto got = run_cpu(faces, size, 3);
  e3dmm::CropParams p;
  p.faces = faces.data();
  p.batch = 3;
  p.size = size;
  p.out = nullptr;
  for (int64_t b = 0; b < 3; ++b)
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x)
          ASSERT_EQ(got[(size_t)(((b * 3 + c) * size + y) * size + x)], e3dmm::crop_value(p, b, c, y, x));
  EXPECT_EQ(run_cpu(faces, size, 1), got);  // whatever the thread count
}

TEST(Crop, StridesChwAndFlippedViews) {
  const Image im = random_image(23, 31, 11);
  std::vector<uint8_t> chw((size_t)(3 * im.h * im.w)), flipped(im.hwc.size());
  for (int64_t y = 0; y < im.h; ++y)
    for (int64_t x = 0; x < im.w; ++x)
      for (int c = 0; c < 3; ++c) {
        chw[(size_t)((c * im.h + y) * im.w + x)] = im.hwc[(size_t)((y * im.w + x) * 3 + c)];
        flipped[(size_t)(((im.h - 1 - y) * im.w + x) * 3 + c)] = im.hwc[(size_t)((y * im.w + x) * 3 + c)];
      }
  e3dmm::CropFace a = hwc_face(im, -4, -3, 27, 20);
  e3dmm::CropFace b = a;  // the same pixels, planar
  b.image = chw.data();
  b.stride_y = im.w;
  b.stride_x = 1;
  b.stride_c = im.h * im.w;
  e3dmm::CropFace c = a;  // the same pixels seen through a vertically flipped copy: negative row stride
  c.image = flipped.data() + (im.h - 1) * im.w * 3;
  c.stride_y = -3 * im.w;
  const auto out = run_cpu({a, b, c}, 50);
  const size_t n = 3 * 50 * 50;
  EXPECT_TRUE(std::equal(out.begin(), out.begin() + n, out.begin() + n));
  EXPECT_TRUE(std::equal(out.begin(), out.begin() + n, out.begin() + 2 * n));
}

TEST(Crop, ExtremeBoundsAreExactAndSafe) {
  const Image im = random_image(16, 16, 3);
  const int64_t L = e3dmm::kMaxCropBound;
  // A crop 224 * 2^24 px long: output pixel 100 lies exactly between image pixels 5 and 6.
  const int64_t n = int64_t(224) << 24, src100 = (int64_t(201) << 23) - 1;
  std::vector<e3dmm::CropFace> faces = {hwc_face(im, -L, -L, L, L), hwc_face(im, L - 1, -L, L, 1 - L),
                                        hwc_face(im, 5 - src100, 5 - src100, 5 - src100 + n, 5 - src100 + n)};
  const auto out = run_cpu(faces, 224);
  const size_t plane = 224 * 224;
  for (size_t i = 0; i < 2 * 3 * plane; ++i) ASSERT_EQ(out[i], 0.0f) << i;  // nothing of the image is sampled
  for (int c = 0; c < 3; ++c) {
    double sum = 0;
    for (int y = 5; y <= 6; ++y)
      for (int x = 5; x <= 6; ++x) sum += im.hwc[(size_t)((y * 16 + x) * 3 + (2 - c))];
    const float* p = out.data() + (2 * 3 + c) * plane;
    EXPECT_EQ(p[100 * 224 + 100], (float)std::nearbyint(sum / 4)) << c;
    for (size_t i = 0; i < plane; ++i) {
      if (i == 100 * 224 + 100) continue;
      ASSERT_EQ(p[i], 0.0f) << i;
    }
  }
}

void expect_invalid(const e3dmm::CropParams& p, const std::string& needle) {
  try {
    e3dmm::crop_cpu(p);
    FAIL() << "expected InvalidInput containing: " << needle;
  } catch (const e3dmm::InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Crop, ValidateNamesFieldExpectedAndFound) {
  const Image im = random_image(10, 12, 1);
  std::vector<float> out(3 * 8 * 8);
  std::vector<e3dmm::CropFace> faces = {hwc_face(im, 0, 0, 12, 10)};
  auto params = [&]() {
    e3dmm::CropParams p;
    p.faces = faces.data();
    p.batch = 1;
    p.size = 8;
    p.out = out.data();
    return p;
  };
  e3dmm::CropParams p = params();
  p.batch = -1;
  expect_invalid(p, "crop: batch: expected a number of faces in [0, 65535], found -1");
  p = params();
  p.size = 0;
  expect_invalid(p, "crop: size: expected in [1, 4096], found 0");
  p = params();
  p.out_type = e3dmm::CropOutType(7);
  expect_invalid(p, "crop: out_type: expected 1 (float32) or 2 (float16), found 7");
  p = params();
  p.out_type = e3dmm::CropOutType::Float16;
  expect_invalid(p, "crop: out_type: expected 1 (float32: crop_cpu writes float32 only");
  p = params();
  p.out = nullptr;
  expect_invalid(p, "crop: out: expected a pointer");
  p = params();
  p.faces = nullptr;
  expect_invalid(p, "crop: faces: expected a pointer to 1 faces, found null");
  const e3dmm::CropFace good = faces[0];
  faces[0].image = nullptr;
  expect_invalid(params(), "crop: faces[0].image: expected a pointer to the image, found null");
  faces[0] = good;
  faces[0].height = 0;
  expect_invalid(params(), "crop: faces[0].height: expected in [1, 2147483647], found 0");
  faces[0] = good;
  faces[0].width = int64_t(1) << 31;
  expect_invalid(params(), "crop: faces[0].width: expected in [1, 2147483647], found 2147483648");
  faces[0] = good;
  faces[0].stride_c = INT64_MIN;  // its magnitude is never taken: the range check comes first
  expect_invalid(params(), "crop: faces[0].stride_c: expected elements in");
  faces[0] = good;
  faces[0].height = (int64_t(1) << 31) - 1;
  faces[0].stride_y = int64_t(1) << 40;
  expect_invalid(params(), "crop: faces[0].stride_y/stride_x/stride_c: expected strides whose extent");
  faces[0] = good;
  faces[0].left = -e3dmm::kMaxCropBound - 1;
  expect_invalid(params(), "crop: faces[0].left (bl): expected a crop bound in [-8589934592, 8589934592]");
  faces[0] = good;
  faces[0].bottom = INT64_MAX;
  expect_invalid(params(), "crop: faces[0].bottom (bb): expected a crop bound");
  faces[0] = good;
  faces[0].right = faces[0].left;
  expect_invalid(params(), "crop: faces[0].right (br): expected > faces[0].left (bl) = 0 (a crop at least 1 px wide), found 0");
  faces[0] = good;
  faces[0].top = 5;
  faces[0].bottom = 4;
  expect_invalid(params(), "crop: faces[0].bottom (bb): expected > faces[0].top (bt) = 5 (a crop at least 1 px high), found 4");
  // An empty batch does nothing, with or without pointers.
  e3dmm::CropParams empty;
  empty.batch = 0;
  EXPECT_NO_THROW(e3dmm::crop_cpu(empty));
}

// A caller's CropNaming names its own arguments in every message, the function first.
TEST(Crop, MessagesUseTheCallersNames) {
  const Image im = random_image(10, 12, 1);
  std::vector<float> out(3 * 8 * 8);
  std::vector<e3dmm::CropFace> faces = {hwc_face(im, 0, 0, 12, 10), hwc_face(im, 0, 0, 12, 10)};
  e3dmm::CropNaming naming;
  naming.function = "caller";
  naming.name = [](e3dmm::CropArg arg, int64_t b) {
    return "arg" + std::to_string((int)arg) + "@" + std::to_string(b);
  };
  e3dmm::CropParams p;
  p.faces = faces.data();
  p.batch = 2;
  p.size = 8;
  p.out = out.data();
  p.naming = &naming;
  faces[1].right = -3;
  expect_invalid(p, "caller: arg" + std::to_string((int)e3dmm::CropArg::Right) + "@1: expected > arg" +
                        std::to_string((int)e3dmm::CropArg::Left) + "@1 = 0 (a crop at least 1 px wide), found -3");
  faces[1] = faces[0];
  faces[1].height = 0;
  expect_invalid(p, "caller: arg" + std::to_string((int)e3dmm::CropArg::Height) + "@1: expected in [1, 2147483647], found 0");
  p.size = 5000;
  expect_invalid(p, "caller: arg" + std::to_string((int)e3dmm::CropArg::Size) + "@-1: expected in [1, 4096], found 5000");
  p.size = 8;
  faces[1] = faces[0];
  p.out_type = e3dmm::CropOutType::Float16;
  expect_invalid(p, "caller: arg" + std::to_string((int)e3dmm::CropArg::OutType) + "@-1: expected 1 (float32: crop_cpu");
  // A naming without a name function keeps the field names, with its function.
  e3dmm::CropNaming only_function;
  only_function.function = "caller";
  p.naming = &only_function;
  p.out_type = e3dmm::CropOutType::Float32;
  faces[0].left = 20;
  expect_invalid(p, "caller: faces[0].right (br): expected > faces[0].left (bl) = 20");
  if (e3dmm::cuda_device_count() > 0) return;  // the Python cuda tests cover crop_cuda's messages on a GPU
  faces[0] = faces[1];
  try {
    e3dmm::crop_cuda(p, nullptr);
    FAIL() << "expected Unavailable";
  } catch (const e3dmm::Unavailable& e) {
    EXPECT_EQ(std::string(e.what()).rfind("caller: ", 0), 0u) << e.what();
  }
}

TEST(Crop, CudaChecksArgumentsFirstThenSaysUnavailable) {
  const Image im = random_image(10, 12, 1);
  std::vector<e3dmm::CropFace> faces = {hwc_face(im, 0, 0, 12, 10)};
  float dummy = 0;
  e3dmm::CropParams p;
  p.faces = faces.data();
  p.batch = 1;
  p.size = 0;
  p.out = &dummy;
  EXPECT_THROW(e3dmm::crop_cuda(p, nullptr), e3dmm::InvalidInput);  // on every build and machine
  if (e3dmm::cuda_device_count() > 0) GTEST_SKIP() << "a GPU is present: the Python cuda tests cover crop_cuda";
  p.size = 8;
  EXPECT_THROW(e3dmm::crop_cuda(p, nullptr), e3dmm::Unavailable);
}

}  // namespace
