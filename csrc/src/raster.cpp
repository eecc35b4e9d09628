// The z-buffer rasteriser of raster.h. The rule it implements is stated there; the numpy
// reference engine/render/reference.py evaluates the same expressions in the same order, so
// the two agree bit for bit wherever a pixel centre is not on a triangle's edge (this file is
// compiled with -ffp-contract=off: a fused multiply-add would round differently from numpy).
//
// Work is split into horizontal bands of rows; a band's thread owns its rows of every output
// plane, so no two threads write one pixel and no locks are needed. Within a band triangles
// are drawn in index order with a strict depth test, which is what makes the lower index win
// a tie whatever the thread count. Each band: clear its rows, draw every triangle that
// overlaps it, then shade its visible pixels once (deferred shading: the colour of a pixel
// that is overdrawn is never computed).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "cpu_common.h"
#include "e3dmm/errors.h"
#include "e3dmm/limits.h"
#include "e3dmm/raster.h"

namespace e3dmm {
namespace {

[[noreturn]] void fail(const std::string& field, const std::string& expected, const std::string& found) {
  throw InvalidInput("rasterize: " + field + ": expected " + expected + ", found " + found);
}

using cpu_common::in_range;
using cpu_common::thread_count;

// A float as text without streams or printf (both follow the locale).
std::string num(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general, 9);
  return std::string(buf, r.ptr);
}

// One triangle, set up once: its corners in double, the edge vectors of the three edge
// functions, and its bounding box clipped to the image (empty: y0 > y1).
struct Tri {
  double ax, ay, bx, by, cx, cy;  // corners
  double e0x, e0y, e1x, e1y, e2x, e2y;  // c - b, a - c, b - a
  double za, zb, zc, area2, inv_area2;
  int32_t ia, ib, ic;  // vertex indices, for the colours
  int32_t x0, x1, y0, y1;
};

// The triangle's edge functions at pixel centre (px, py), written exactly as the reference
// writes them: w_i = e_i.x * (py - o_i.y) - e_i.y * (px - o_i.x). The first products depend on
// the row only and are formed once per row (the same values). Orientation is folded into the
// edge vectors at set-up (negating both factors of a product negates it exactly), so inside
// means all three >= 0.
struct RowEdges {
  double r0, r1, r2;
  RowEdges(const Tri& t, double py) : r0(t.e0x * (py - t.by)), r1(t.e1x * (py - t.cy)), r2(t.e2x * (py - t.ay)) {}
};
inline void edge_functions(const Tri& t, const RowEdges& r, double px, double& w0, double& w1, double& w2) {
  w0 = r.r0 - t.e0y * (px - t.bx);
  w1 = r.r1 - t.e1y * (px - t.cx);
  w2 = r.r2 - t.e2y * (px - t.ax);
}

// double -> float with the float range's ends for values beyond it (a plain conversion of a
// double outside the float range is undefined behaviour).
inline float to_float(double v) {
  constexpr double kMax = std::numeric_limits<float>::max();
  return (float)(v > kMax ? kMax : v < -kMax ? -kMax : v);
}

inline uint8_t to_u8(double v) {  // clamp to [0, 255], round half up; NaN gives 0
  return v >= 255.0 ? uint8_t(255) : v > 0.0 ? (uint8_t)(v + 0.5) : uint8_t(0);
}

}  // namespace

void validate(const RasterParams& p) {
  if (p.width < 1 || p.width > kMaxRasterSide) fail("width", in_range(1, kMaxRasterSide), std::to_string(p.width));
  if (p.height < 1 || p.height > kMaxRasterSide) fail("height", in_range(1, kMaxRasterSide), std::to_string(p.height));
  if (p.width * p.height > kMaxRasterPixels)
    fail("width x height", "at most " + std::to_string(kMaxRasterPixels) + " pixels",
         std::to_string(p.width) + " x " + std::to_string(p.height) + " = " + std::to_string(p.width * p.height));
  if (p.num_vertices < 0 || p.num_vertices > kMaxVertices)
    fail("num_vertices", in_range(0, kMaxVertices), std::to_string(p.num_vertices));
  if (p.num_faces < 0 || p.num_faces > kMaxFaces) fail("num_faces", in_range(0, kMaxFaces), std::to_string(p.num_faces));
  if (p.num_vertices > 0 && !p.vertices) fail("vertices", "a pointer", "null");
  if (p.num_faces > 0 && !p.faces) fail("faces", "a pointer", "null");
  for (int k = 0; k < 3; ++k)
    if (!std::isfinite(p.light[k])) fail("light[" + std::to_string(k) + "]", "a finite number", num(p.light[k]));
  if (p.light[0] == 0.0f && p.light[1] == 0.0f && p.light[2] == 0.0f) fail("light", "a non-zero direction", "(0, 0, 0)");
  if (!(p.ambient >= 0.0f && p.ambient <= 1.0f)) fail("ambient", "a number in [0, 1]", num(p.ambient));
  // One pass that only tests (all-ones exponent = Inf or NaN); the message is built on failure.
  for (int64_t i = 0; i < 3 * p.num_vertices; ++i)
    if (!std::isfinite(p.vertices[i]))
      fail("vertices[" + std::to_string(i / 3) + ", " + std::to_string(i % 3) + "]", "a finite number",
           num(p.vertices[i]));
  const uint32_t n = (uint32_t)p.num_vertices;  // <= kMaxVertices
  for (int64_t i = 0; i < 3 * p.num_faces; ++i)
    if ((uint32_t)p.faces[i] >= n)  // negative indices wrap to >= 2^31 > n
      fail("faces[" + std::to_string(i / 3) + ", " + std::to_string(i % 3) + "]",
           "a vertex index in [0, " + std::to_string(p.num_vertices) + ")", std::to_string(p.faces[i]));
}

void rasterize(const RasterParams& p, int num_threads) {
  validate(p);
  const int nt = thread_count(num_threads);
  const int64_t W = p.width, H = p.height, F = p.num_faces, N = p.num_vertices;

  // ---- set-up: every triangle's edges and clipped box, its normal; the work bound ----
  std::unique_ptr<Tri[]> tris(new Tri[(size_t)F]);  // default-initialised: every field is set below
  std::unique_ptr<double[]> face_normal(new double[(size_t)(3 * F)]);
  int64_t work = 0;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : work)
#endif
  for (int64_t f = 0; f < F; ++f) {
    Tri& t = tris[f];
    t.ia = p.faces[3 * f];
    t.ib = p.faces[3 * f + 1];
    t.ic = p.faces[3 * f + 2];
    const float* a = p.vertices + 3 * (int64_t)t.ia;
    const float* b = p.vertices + 3 * (int64_t)t.ib;
    const float* c = p.vertices + 3 * (int64_t)t.ic;
    t.ax = a[0], t.ay = a[1], t.za = a[2];
    t.bx = b[0], t.by = b[1], t.zb = b[2];
    t.cx = c[0], t.cy = c[1], t.zc = c[2];
    // Normal (b - a) x (c - a), in the mesh's own winding (turned to the camera per vertex later).
    const double ux = t.bx - t.ax, uy = t.by - t.ay, uz = t.zb - t.za;
    const double vx = t.cx - t.ax, vy = t.cy - t.ay, vz = t.zc - t.za;
    face_normal[3 * f] = uy * vz - uz * vy;
    face_normal[3 * f + 1] = uz * vx - ux * vz;
    face_normal[3 * f + 2] = ux * vy - uy * vx;
    t.area2 = (t.bx - t.ax) * (t.cy - t.ay) - (t.by - t.ay) * (t.cx - t.ax);
    t.e0x = t.cx - t.bx, t.e0y = t.cy - t.by;
    t.e1x = t.ax - t.cx, t.e1y = t.ay - t.cy;
    t.e2x = t.bx - t.ax, t.e2y = t.by - t.ay;
    if (t.area2 < 0) {  // the other winding: the same triangle, edge functions negated exactly
      t.e0x = -t.e0x, t.e0y = -t.e0y, t.e1x = -t.e1x, t.e1y = -t.e1y, t.e2x = -t.e2x, t.e2y = -t.e2y;
      t.area2 = -t.area2;
    }
    t.inv_area2 = 1.0 / t.area2;
    t.x0 = t.y0 = 0;
    t.x1 = t.y1 = -1;  // empty
    if (!(t.area2 > 0)) continue;  // degenerate: covers nothing
    // Clamped in double before the conversion to int (a huge coordinate must not overflow it).
    const double lox = std::max(std::ceil(std::min({t.ax, t.bx, t.cx})), 0.0);
    const double hix = std::min(std::floor(std::max({t.ax, t.bx, t.cx})), (double)(W - 1));
    const double loy = std::max(std::ceil(std::min({t.ay, t.by, t.cy})), 0.0);
    const double hiy = std::min(std::floor(std::max({t.ay, t.by, t.cy})), (double)(H - 1));
    if (lox > hix || loy > hiy) continue;
    t.x0 = (int32_t)lox, t.x1 = (int32_t)hix, t.y0 = (int32_t)loy, t.y1 = (int32_t)hiy;
    work += (int64_t)(t.x1 - t.x0 + 1) * (t.y1 - t.y0 + 1);
  }
  if (work > kMaxRasterWork)
    fail("vertices", "triangles whose boxes in the image take at most " + std::to_string(kMaxRasterWork) +
                         " pixel tests in all", std::to_string(work) + " (huge or very many triangles)");

  // ---- per-vertex shaded colours (Gouraud) ----
  double lx = p.light[0], ly = p.light[1], lz = p.light[2];
  const double ll = std::sqrt(lx * lx + ly * ly + lz * lz);
  lx /= ll, ly /= ll, lz /= ll;
  std::vector<double> vn((size_t)(3 * N), 0.0);
  for (int64_t f = 0; f < F; ++f)  // serial: vertices are shared between triangles
    for (int k = 0; k < 3; ++k) {
      double* n = &vn[3 * (size_t)p.faces[3 * f + k]];
      n[0] += face_normal[3 * f], n[1] += face_normal[3 * f + 1], n[2] += face_normal[3 * f + 2];
    }
  std::unique_ptr<double[]> shaded(new double[(size_t)(3 * N)]);
  const double ambient = p.ambient;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
  for (int64_t v = 0; v < N; ++v) {
    double nx = vn[3 * v], ny = vn[3 * v + 1], nz = vn[3 * v + 2];
    const double len = std::sqrt(nx * nx + ny * ny + nz * nz);
    if (len > 0 && std::isfinite(len)) {
      nx /= len, ny /= len, nz /= len;
    } else {
      nx = 0, ny = 0, nz = -1;
    }
    if (nz > 0) nx = -nx, ny = -ny, nz = -nz;  // face the camera (which looks along +z)
    const double s = ambient + (1.0 - ambient) * std::max(0.0, nx * lx + ny * ly + nz * lz);
    for (int k = 0; k < 3; ++k)
      shaded[3 * v + k] = (p.colors ? (double)p.colors[3 * v + k] : (double)kDefaultGrey) * s;
  }

  // ---- bands of rows: clear, draw, shade ----
  std::unique_ptr<float[]> own_depth;
  std::unique_ptr<int32_t[]> own_tri;
  float* depth = p.depth;
  int32_t* tri = p.triangle;
  if (!depth) own_depth.reset(new float[(size_t)(W * H)]), depth = own_depth.get();
  if (!tri) own_tri.reset(new int32_t[(size_t)(W * H)]), tri = own_tri.get();
  const int64_t bands = std::min<int64_t>(H, 4 * (int64_t)nt);
  const int64_t rows_per_band = (H + bands - 1) / bands;
  const float kFar = std::numeric_limits<float>::infinity();
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
#endif
  for (int64_t band = 0; band < bands; ++band) {
    const int64_t r0 = band * rows_per_band, r1 = std::min(H, r0 + rows_per_band) - 1;
    if (r0 > r1) continue;
    std::fill(depth + r0 * W, depth + (r1 + 1) * W, kFar);
    std::fill(tri + r0 * W, tri + (r1 + 1) * W, -1);
    for (int64_t f = 0; f < F; ++f) {
      const Tri& t = tris[f];
      if (t.y1 < r0 || t.y0 > r1) continue;  // also skips empty triangles (y0 > y1)
      const int64_t ya = std::max<int64_t>(t.y0, r0), yb = std::min<int64_t>(t.y1, r1);
      for (int64_t y = ya; y <= yb; ++y) {
        float* zrow = depth + y * W;
        int32_t* trow = tri + y * W;
        const RowEdges row(t, (double)y);
        for (int64_t x = t.x0; x <= t.x1; ++x) {
          double w0, w1, w2;
          edge_functions(t, row, (double)x, w0, w1, w2);
          if (!(w0 >= 0 && w1 >= 0 && w2 >= 0)) continue;
          const float z = to_float((w0 * t.za + w1 * t.zb + w2 * t.zc) * t.inv_area2);
          if (z < zrow[x]) zrow[x] = z, trow[x] = (int32_t)f;
        }
      }
    }
    for (int64_t y = r0; y <= r1; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const int64_t i = y * W + x;
        const int32_t f = tri[i];
        if (p.mask) p.mask[i] = f >= 0;
        if (f < 0 || !p.rgb) continue;
        const Tri& t = tris[f];
        double w0, w1, w2;
        edge_functions(t, RowEdges(t, (double)y), (double)x, w0, w1, w2);
        const double* ca = &shaded[3 * (size_t)t.ia];
        const double* cb = &shaded[3 * (size_t)t.ib];
        const double* cc = &shaded[3 * (size_t)t.ic];
        for (int k = 0; k < 3; ++k) p.rgb[3 * i + k] = to_u8((w0 * ca[k] + w1 * cb[k] + w2 * cc[k]) * t.inv_area2);
      }
  }
}

}  // namespace e3dmm
