// The rasteriser through the public API: known answers worked out by hand, the z-buffer's
// independence from drawing order and thread count, and typed errors for bad arguments.
// (The pixel-for-pixel comparison with the numpy reference is tests/render/test_raster_reference.py.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "e3dmm/errors.h"
#include "e3dmm/limits.h"
#include "e3dmm/raster.h"

namespace {

struct Image {
  int64_t w, h;
  std::vector<uint8_t> rgb, mask;
  std::vector<float> depth;
  std::vector<int32_t> tri;
  Image(int64_t w_, int64_t h_) : w(w_), h(h_), rgb(w_ * h_ * 3, 7), mask(w_ * h_), depth(w_ * h_), tri(w_ * h_) {}
};

Image draw(const std::vector<float>& v, const std::vector<int32_t>& f, const std::vector<uint8_t>* colors, int64_t w,
           int64_t h, int threads = 1, float ambient = 0.3f, const float light[3] = nullptr) {
  Image im(w, h);
  e3dmm::RasterParams p;
  p.vertices = v.data();
  p.num_vertices = (int64_t)v.size() / 3;
  p.faces = f.data();
  p.num_faces = (int64_t)f.size() / 3;
  p.colors = colors ? colors->data() : nullptr;
  p.width = w;
  p.height = h;
  p.ambient = ambient;
  if (light) p.light[0] = light[0], p.light[1] = light[1], p.light[2] = light[2];
  p.rgb = im.rgb.data();
  p.mask = im.mask.data();
  p.depth = im.depth.data();
  p.triangle = im.tri.data();
  e3dmm::rasterize(p, threads);
  return im;
}

// A flat square [x0, x1] x [y0, y1] at depth z as two triangles (in the given winding).
void square(std::vector<float>& v, std::vector<int32_t>& f, float x0, float y0, float x1, float y1, float z,
            bool flip = false) {
  const int32_t b = (int32_t)v.size() / 3;
  for (float c : {x0, y0, z, x1, y0, z, x1, y1, z, x0, y1, z}) v.push_back(c);
  if (!flip) {
    for (int32_t i : {b, b + 1, b + 2, b, b + 2, b + 3}) f.push_back(i);
  } else {
    for (int32_t i : {b, b + 2, b + 1, b, b + 3, b + 2}) f.push_back(i);
  }
}

TEST(Raster, RightTriangleCoversExactlyTheCentresInside) {
  // Corners (0.5, 0.5), (10.5, 0.5), (0.5, 10.5): centre (x, y) is inside when x >= 1, y >= 1
  // and x + y <= 11, i.e. 10 + 9 + ... + 1 = 55 pixels. Both windings give the same set.
  for (bool flip : {false, true}) {
    std::vector<float> v = {0.5f, 0.5f, 1.0f, 10.5f, 0.5f, 1.0f, 0.5f, 10.5f, 1.0f};
    std::vector<int32_t> f = flip ? std::vector<int32_t>{0, 2, 1} : std::vector<int32_t>{0, 1, 2};
    Image im = draw(v, f, nullptr, 16, 16);
    int count = 0;
    for (int64_t y = 0; y < 16; ++y)
      for (int64_t x = 0; x < 16; ++x) {
        const bool inside = x >= 1 && y >= 1 && x + y <= 11;
        EXPECT_EQ(im.mask[y * 16 + x], inside ? 1 : 0) << x << "," << y << " flip " << flip;
        EXPECT_EQ(im.tri[y * 16 + x], inside ? 0 : -1);
        if (inside) {
          ++count;
          EXPECT_EQ(im.depth[y * 16 + x], 1.0f);
        } else {
          EXPECT_TRUE(std::isinf(im.depth[y * 16 + x]));
          EXPECT_EQ(im.rgb[3 * (y * 16 + x)], 7);  // the background is kept
        }
      }
    EXPECT_EQ(count, 55);
  }
}

TEST(Raster, CentresOnTheEdgeAreCovered) {
  // The closed triangle: corners on pixel centres cover them.
  std::vector<float> v = {2, 2, 0, 6, 2, 0, 2, 6, 0};
  std::vector<int32_t> f = {0, 1, 2};
  Image im = draw(v, f, nullptr, 8, 8);
  EXPECT_EQ(im.mask[2 * 8 + 2], 1);
  EXPECT_EQ(im.mask[2 * 8 + 6], 1);
  EXPECT_EQ(im.mask[6 * 8 + 2], 1);
  EXPECT_EQ(im.mask[4 * 8 + 4], 1);  // on the hypotenuse
  EXPECT_EQ(im.mask[5 * 8 + 4], 0);
}

TEST(Raster, NearestSurfaceWinsWhateverTheOrder) {
  // Two overlapping squares at depths 5 and 2: the one at 2 is seen in the overlap whether it
  // is drawn first or last (a z-buffer, not a painter's algorithm).
  for (bool near_first : {false, true}) {
    std::vector<float> v;
    std::vector<int32_t> f;
    if (near_first) square(v, f, 4, 4, 12, 12, 2.0f);
    square(v, f, 0, 0, 8, 8, 5.0f);
    if (!near_first) square(v, f, 4, 4, 12, 12, 2.0f);
    Image im = draw(v, f, nullptr, 16, 16);
    const int32_t near_lo = near_first ? 0 : 2;
    EXPECT_EQ(im.depth[6 * 16 + 6], 2.0f);
    EXPECT_GE(im.tri[6 * 16 + 6], near_lo);
    EXPECT_LE(im.tri[6 * 16 + 6], near_lo + 1);
    EXPECT_EQ(im.depth[2 * 16 + 2], 5.0f);
    EXPECT_EQ(im.depth[10 * 16 + 10], 2.0f);
  }
}

TEST(Raster, InterpenetratingPlanesMeetOnTheirIntersection) {
  // A tilted square z = x - 8 against a flat one at z = 0: the tilted one is nearer for x < 8.
  std::vector<float> v = {0, 0, -8, 16, 0, 8, 16, 16, 8, 0, 16, -8};
  std::vector<int32_t> f = {0, 1, 2, 0, 2, 3};
  square(v, f, 0, 0, 16, 16, 0.0f);
  Image im = draw(v, f, nullptr, 17, 17);
  for (int64_t x = 0; x <= 16; ++x) {
    if (x == 8) continue;  // the intersection: a tie
    const int32_t t = im.tri[5 * 17 + x];
    EXPECT_EQ(t < 2, x < 8) << "x " << x << " triangle " << t;
  }
  EXPECT_EQ(im.tri[5 * 17 + 8], 0);  // equal depth: the lower index
}

TEST(Raster, LambertShadeWithAmbient) {
  // A flat triangle facing the camera, lit from the camera: shade 1, colours unchanged. Lit
  // from the side (light along x, perpendicular to the normal): only the ambient, 0.25.
  std::vector<float> v = {1, 1, 3, 30, 1, 3, 1, 30, 3};
  std::vector<int32_t> f = {0, 1, 2};
  std::vector<uint8_t> c = {200, 100, 40, 200, 100, 40, 200, 100, 40};
  Image front = draw(v, f, &c, 32, 32, 1, 0.25f);
  EXPECT_EQ(front.rgb[3 * (5 * 32 + 5)], 200);
  EXPECT_EQ(front.rgb[3 * (5 * 32 + 5) + 1], 100);
  EXPECT_EQ(front.rgb[3 * (5 * 32 + 5) + 2], 40);
  const float side[3] = {1, 0, 0};
  Image lit = draw(v, f, &c, 32, 32, 1, 0.25f, side);
  EXPECT_EQ(lit.rgb[3 * (5 * 32 + 5)], 50);
  EXPECT_EQ(lit.rgb[3 * (5 * 32 + 5) + 1], 25);
  EXPECT_EQ(lit.rgb[3 * (5 * 32 + 5) + 2], 10);
  // The other winding: its normal points away; turned to the camera it shades the same.
  std::vector<int32_t> back = {0, 2, 1};
  Image flipped = draw(v, back, &c, 32, 32, 1, 0.25f);
  EXPECT_EQ(flipped.rgb, front.rgb);
  EXPECT_EQ(flipped.depth, front.depth);
}

TEST(Raster, VertexColoursMixBarycentrically) {
  // At the centroid of a red-green-blue triangle each weight is 1/3: 255 / 3 = 85.
  std::vector<float> v = {1, 1, 0, 31, 1, 0, 1, 31, 0};  // centroid (11, 11)
  std::vector<int32_t> f = {0, 1, 2};
  std::vector<uint8_t> c = {255, 0, 0, 0, 255, 0, 0, 0, 255};
  Image im = draw(v, f, &c, 32, 32, 1, 1.0f);  // ambient 1: no shading
  const uint8_t* px = &im.rgb[3 * (11 * 32 + 11)];
  EXPECT_EQ(px[0], 85);
  EXPECT_EQ(px[1], 85);
  EXPECT_EQ(px[2], 85);
  EXPECT_EQ(im.rgb[3 * (1 * 32 + 1)], 255);  // at vertex a: its colour alone
}

TEST(Raster, ThreadCountDoesNotChangeThePicture) {
  std::vector<float> v;
  std::vector<int32_t> f;
  uint32_t s = 12345;
  auto rnd = [&s]() { s = s * 1664525u + 1013904223u; return (float)(s >> 8) / 16777216.0f; };
  for (int k = 0; k < 300; ++k) {
    const int32_t b = (int32_t)v.size() / 3;
    for (int j = 0; j < 3; ++j) {
      v.push_back(rnd() * 80 - 8);
      v.push_back(rnd() * 60 - 6);
      v.push_back(rnd() * 10);
    }
    for (int j = 0; j < 3; ++j) f.push_back(b + j);
  }
  Image one = draw(v, f, nullptr, 64, 48, 1);
  for (int threads : {2, 3, 8}) {
    Image many = draw(v, f, nullptr, 64, 48, threads);
    EXPECT_EQ(many.tri, one.tri) << threads;
    EXPECT_EQ(many.rgb, one.rgb) << threads;
    EXPECT_EQ(many.depth, one.depth) << threads;
  }
}

TEST(Raster, HugeFiniteCoordinatesAreClippedNotOverflowed) {
  const float big = std::numeric_limits<float>::max();
  std::vector<float> v = {-big, -big, 1, big, -big, 1, 0, big, 1};
  std::vector<int32_t> f = {0, 1, 2};
  Image im = draw(v, f, nullptr, 8, 8);
  int covered = 0;
  for (uint8_t m : im.mask) covered += m;
  EXPECT_GT(covered, 0);  // the image lies inside the triangle
}

void expect_invalid(const e3dmm::RasterParams& p, const std::string& needle) {
  try {
    e3dmm::rasterize(p, 1);
    FAIL() << "no error; expected one naming " << needle;
  } catch (const e3dmm::InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Raster, BadArgumentsAreTypedErrors) {
  std::vector<float> v = {0, 0, 0, 4, 0, 0, 0, 4, 0};
  std::vector<int32_t> f = {0, 1, 2};
  std::vector<uint8_t> rgb(64 * 3);
  auto base = [&]() {
    e3dmm::RasterParams p;
    p.vertices = v.data(), p.num_vertices = 3, p.faces = f.data(), p.num_faces = 1;
    p.width = 8, p.height = 8, p.rgb = rgb.data();
    return p;
  };
  auto p = base();
  p.width = 0;
  expect_invalid(p, "width");
  p = base();
  p.height = e3dmm::kMaxRasterSide + 1;
  expect_invalid(p, "height");
  p = base();
  p.width = p.height = e3dmm::kMaxRasterSide;  // each side allowed, the product not
  expect_invalid(p, "width x height");
  p = base();
  p.num_faces = e3dmm::kMaxFaces + 1;
  expect_invalid(p, "num_faces");
  p = base();
  p.ambient = 1.5f;
  expect_invalid(p, "ambient");
  p = base();
  p.light[2] = 0.0f;
  expect_invalid(p, "light");
  p = base();
  p.light[1] = std::nanf("");
  expect_invalid(p, "light[1]");
  p = base();
  p.vertices = nullptr;
  expect_invalid(p, "vertices");

  std::vector<float> bad = v;
  bad[4] = std::numeric_limits<float>::quiet_NaN();
  p = base();
  p.vertices = bad.data();
  expect_invalid(p, "vertices[1, 1]");
  bad[4] = -std::numeric_limits<float>::infinity();
  expect_invalid(p, "-inf");

  for (int32_t index : {3, -1, std::numeric_limits<int32_t>::min()}) {
    std::vector<int32_t> bf = {0, index, 2};
    p = base();
    p.faces = bf.data();
    expect_invalid(p, "faces[0, 1]");
  }
  EXPECT_EQ(rgb, std::vector<uint8_t>(64 * 3));  // nothing was drawn by a refused call
}

TEST(Raster, WorkBoundRefusesHugeTrianglesBeforeDrawing) {
  // 300 triangles each covering a 4096 x 4096 image: 5e9 pixel tests > kMaxRasterWork.
  std::vector<float> v = {-10, -10, 0, 9000, -10, 0, -10, 9000, 0};
  std::vector<int32_t> f;
  for (int k = 0; k < 300; ++k) f.insert(f.end(), {0, 1, 2});
  e3dmm::RasterParams p;
  p.vertices = v.data(), p.num_vertices = 3, p.faces = f.data(), p.num_faces = 300;
  p.width = 4096, p.height = 4096;
  std::vector<uint8_t> mask(4096 * 4096, 9);
  p.mask = mask.data();
  expect_invalid(p, "pixel tests");
  EXPECT_EQ(mask[12345], 9);  // untouched
}

}  // namespace
