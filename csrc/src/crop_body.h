// The crop kernel's per-element body, a __host__ __device__ function of plain arguments: the
// CUDA kernel (crop_cuda.cu) runs it per output pixel, the CPU path (crop_cpu.cpp) runs the same
// code over the whole index space, and the CPU tests hold that against engine.crop on real photos.
//
// The arithmetic mirrors engine.crop._sample_bilinear operation for operation, so the two agree
// bit for bit:
//   - per axis, in float64: src = (j + 0.5) * (n / size) - 0.5, clamped to [0, n - 1];
//     i0 = floor(src), i1 = min(i0 + 1, n - 1), frac = src - i0; weights (1 - frac, frac), a
//     weight set to zero where its tap (start + i) lies outside the image;
//   - per tap pair, weight = float(wy * wx) (the product in float64, then rounded to float32);
//   - per channel, in float32: acc = 0; acc += float(pixel) * weight for (a, b) = (0, 0),
//     (0, 1), (1, 0), (1, 1); then rint (halves to even) and clamp to [0, 255].
// No fused multiply-add anywhere: on the device the products and sums use the explicitly
// rounded intrinsics (__dmul_rn, __fmul_rn, ...) that nvcc never contracts, and crop_cpu.cpp is
// compiled with -ffp-contract=off. A contracted a * b + c rounds once instead of twice and would
// move some values across a .5 boundary (one grey level).
//
// Exactness for huge boxes: every bound is within kMaxCropBound = 2^33 (validate()), so crop
// lengths n <= 2^34, tap positions and image indices are integers far below 2^53 and exact in
// float64; src's fractional part keeps 53 - 35 = 18 bits or more, as numpy's does.
#pragma once

#include <math.h>

#include <cstdint>

#include "e3dmm/crop.h"

#if defined(__CUDACC__)
#define E3DMM_CROP_HD __host__ __device__ __forceinline__
#else
#define E3DMM_CROP_HD inline
#endif

namespace e3dmm {
namespace crop_body {

// Correctly rounded arithmetic that no compiler fuses into an FMA (see the file comment).
E3DMM_CROP_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
E3DMM_CROP_HD double sub_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
E3DMM_CROP_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
E3DMM_CROP_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// The two taps of one output row or column.
struct AxisTaps {
  int64_t i0 = 0, i1 = 0;      // image row/column of each tap; read only where ok0/ok1
  double w0 = 0.0, w1 = 0.0;   // bilinear weights, already zero where the tap is outside the image
  bool ok0 = false, ok1 = false;  // the tap lies inside the image (else it reads as zero)
};

// Taps of output index j (0 <= j < n_out) along one axis of a crop that starts at image index
// `start`, is n_in >= 1 pixels long, and samples an image `limit` pixels long on that axis.
E3DMM_CROP_HD AxisTaps axis_taps(int64_t start, int64_t n_in, int n_out, int64_t limit, int j) {
  const double scale = (double)n_in / (double)n_out;  // IEEE division on host and device alike
  const double hi = (double)(n_in - 1);
  double src = sub_rn(mul_rn((double)j + 0.5, scale), 0.5);
  src = src > 0.0 ? src : 0.0;  // np.clip(src, 0, n - 1): maximum first, then minimum
  src = src < hi ? src : hi;
  const double f0 = floor(src);
  const double f1 = f0 + 1.0 < hi ? f0 + 1.0 : hi;  // exact: integers below 2^35
  const double frac = src - f0;                     // exact: src's own fractional bits
  AxisTaps t;
  t.i0 = start + (int64_t)f0;  // |start| <= 2^33, f0 < 2^34: no overflow, no rounding
  t.i1 = start + (int64_t)f1;
  t.ok0 = t.i0 >= 0 && t.i0 < limit;
  t.ok1 = t.i1 >= 0 && t.i1 < limit;
  t.w0 = t.ok0 ? 1.0 - frac : 0.0;
  t.w1 = t.ok1 ? frac : 0.0;
  return t;
}

E3DMM_CROP_HD AxisTaps row_taps(const CropFace& f, int size, int oy) {
  return axis_taps(f.top, f.bottom - f.top, size, f.height, oy);
}
E3DMM_CROP_HD AxisTaps col_taps(const CropFace& f, int size, int ox) {
  return axis_taps(f.left, f.right - f.left, size, f.width, ox);
}

// The uint8 resize's value as a float: rint (halves to even, as np.rint) and clamp to [0, 255].
E3DMM_CROP_HD float to_grey_level(float acc) {
  const float r = rintf(acc);
  return r > 0.0f ? (r < 255.0f ? r : 255.0f) : 0.0f;
}

// The pixel whose row and column taps are ty and tx, in the network's BGR order (bgr[0] = blue,
// read from the RGB source's channel 2). The four weights are formed once for the three channels.
E3DMM_CROP_HD void sample_pixel(const CropFace& f, const AxisTaps& ty, const AxisTaps& tx, float (&bgr)[3]) {
  const bool oky[2] = {ty.ok0, ty.ok1}, okx[2] = {tx.ok0, tx.ok1};
  const int64_t iy[2] = {ty.i0, ty.i1}, ix[2] = {tx.i0, tx.i1};
  const double wy[2] = {ty.w0, ty.w1}, wx[2] = {tx.w0, tx.w1};
  float acc[3] = {0.0f, 0.0f, 0.0f};  // R, G, B
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b) {
      // A tap outside the image adds float(pixel) * 0 = +0 in the reference: nothing. It is
      // skipped, so no address outside the image is ever formed.
      if (!(oky[a] && okx[b])) continue;
      const float w = (float)mul_rn(wy[a], wx[b]);
      const uint8_t* px = f.image + iy[a] * f.stride_y + ix[b] * f.stride_x;
      for (int c = 0; c < 3; ++c) acc[c] = add_rn(acc[c], mul_rn((float)px[c * f.stride_c], w));
    }
  for (int c = 0; c < 3; ++c) bgr[c] = to_grey_level(acc[2 - c]);
}

// One output element: face f, BGR channel c (0 = blue), row oy, column ox of a size x size crop.
// The kernels compute the taps once per pixel (or row) and call sample_pixel: the same operations.
E3DMM_CROP_HD float crop_element(const CropFace& f, int size, int c, int oy, int ox) {
  float bgr[3];
  sample_pixel(f, row_taps(f, size, oy), col_taps(f, size, ox), bgr);
  return bgr[c];
}

}  // namespace crop_body
}  // namespace e3dmm
