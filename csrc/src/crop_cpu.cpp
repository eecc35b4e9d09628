// Argument checks of the crop kernels and the CPU path: crop_body.h run over the whole index
// space. Compiled with -ffp-contract=off (CMakeLists.txt): crop_body.h's arithmetic must round
// every product and sum on its own, as numpy does, or a few values move by one grey level.
//
// Threads take rows of the batch (face b, output row oy) in contiguous static chunks, so B = 1
// uses every core as well as B = 128 does. Each thread keeps the column taps of the face it is
// on and recomputes them only when its rows move on to the next face.
#include <cstdint>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "cpu_common.h"
#include "crop_body.h"
#include "e3dmm/crop.h"
#include "e3dmm/errors.h"

namespace e3dmm {
namespace {

// Messages built with std::to_string (integers: no locale grouping), never with streams.
[[noreturn]] void fail(const std::string& field, const std::string& expected, int64_t found) {
  throw InvalidInput("crop: " + field + ": expected " + expected + ", found " + std::to_string(found));
}

using cpu_common::in_range;
using cpu_common::thread_count;

int64_t magnitude(int64_t v) { return v < 0 ? -v : v; }  // callers bound v first: never INT64_MIN

}  // namespace

void validate(const CropParams& p) {
  if (p.batch < 0 || p.batch > kMaxCropBatch) fail("batch", "a number of faces " + in_range(0, kMaxCropBatch), p.batch);
  if (p.size < 1 || p.size > kMaxCropSize) fail("size", in_range(1, kMaxCropSize), p.size);
  if (p.out_type != CropOutType::Float32 && p.out_type != CropOutType::Float16)
    fail("out_type", "1 (float32) or 2 (float16)", (int64_t)p.out_type);
  if (p.batch == 0) return;  // nothing to read or write: the pointers may be null
  if (!p.faces) throw InvalidInput("crop: faces: expected a pointer to " + std::to_string(p.batch) + " faces, found null");
  if (!p.out) throw InvalidInput("crop: out: expected a pointer to the [B, 3, size, size] buffer, found null");
  // Strides may be as large as an image's extent needs, and no larger: every address the body forms
  // is image + y * stride_y + x * stride_x + c * stride_c with 0 <= y < H, 0 <= x < W, 0 <= c < 3.
  constexpr int64_t kMaxStride = int64_t(1) << 62;
  constexpr int64_t kMaxExtent = int64_t(1) << 62;
  for (int64_t b = 0; b < p.batch; ++b) {
    const CropFace& f = p.faces[b];
    const std::string at = "faces[" + std::to_string(b) + "].";
    if (!f.image) throw InvalidInput("crop: " + at + "image: expected a pointer to the image, found null");
    if (f.height < 1 || f.height > kMaxCropImageSide) fail(at + "height", in_range(1, kMaxCropImageSide), f.height);
    if (f.width < 1 || f.width > kMaxCropImageSide) fail(at + "width", in_range(1, kMaxCropImageSide), f.width);
    const int64_t strides[3] = {f.stride_y, f.stride_x, f.stride_c};
    const int64_t spans[3] = {f.height - 1, f.width - 1, 2};
    const char* names[3] = {"stride_y", "stride_x", "stride_c"};
    int64_t extent = 0;
    for (int i = 0; i < 3; ++i) {
      if (strides[i] < -kMaxStride || strides[i] > kMaxStride)
        fail(at + names[i], "elements " + in_range(-kMaxStride, kMaxStride), strides[i]);
      int64_t part = 0;
      if (__builtin_mul_overflow(magnitude(strides[i]), spans[i], &part) ||
          __builtin_add_overflow(extent, part, &extent) || extent > kMaxExtent)
        throw InvalidInput("crop: " + at + "stride_y/stride_x/stride_c: expected strides whose extent over the " +
                           std::to_string(f.height) + " x " + std::to_string(f.width) + " x 3 image is at most 2^62 " +
                           "elements, found stride_y=" + std::to_string(f.stride_y) + " stride_x=" +
                           std::to_string(f.stride_x) + " stride_c=" + std::to_string(f.stride_c));
    }
    const int64_t bounds[4] = {f.left, f.top, f.right, f.bottom};
    const char* bnames[4] = {"left (bl)", "top (bt)", "right (br)", "bottom (bb)"};
    for (int i = 0; i < 4; ++i)
      if (bounds[i] < -kMaxCropBound || bounds[i] > kMaxCropBound)
        fail(at + bnames[i], "a crop bound " + in_range(-kMaxCropBound, kMaxCropBound) + " (engine.crop's box rule)",
             bounds[i]);
    if (f.right <= f.left)
      fail(at + "right (br)", "> left (bl) = " + std::to_string(f.left) + " (a crop at least 1 px wide)", f.right);
    if (f.bottom <= f.top)
      fail(at + "bottom (bb)", "> top (bt) = " + std::to_string(f.top) + " (a crop at least 1 px high)", f.bottom);
  }
}

void crop_cpu(const CropParams& p, int num_threads) {
  validate(p);
  if (p.out_type != CropOutType::Float32)
    fail("out_type", "1 (float32: crop_cpu writes float32 only; float16 is crop_cuda's)", (int64_t)p.out_type);
  if (p.batch == 0) return;
  const int size = p.size;
  const int64_t rows = p.batch * size;
  const int64_t plane = (int64_t)size * size;
  float* out = static_cast<float*>(p.out);
  const int nt = thread_count(num_threads);
  // Column taps, one row of `size` per thread, allocated before the parallel region (a failed
  // allocation throws here, not inside OpenMP where it would terminate the process).
  std::vector<crop_body::AxisTaps> scratch((size_t)nt * (size_t)size);
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt)
#endif
  {
#if defined(_OPENMP)
    const int tid = omp_get_thread_num();
#else
    const int tid = 0;
#endif
    crop_body::AxisTaps* tx = scratch.data() + (size_t)tid * (size_t)size;
    int64_t cached = -1;  // the face whose column taps tx holds
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = r / size;
      const int oy = (int)(r % size);
      const CropFace& f = p.faces[b];
      if (b != cached) {
        for (int ox = 0; ox < size; ++ox) tx[ox] = crop_body::col_taps(f, size, ox);
        cached = b;
      }
      const crop_body::AxisTaps ty = crop_body::row_taps(f, size, oy);
      float* o = out + b * 3 * plane + (int64_t)oy * size;
      for (int ox = 0; ox < size; ++ox) {
        float bgr[3];
        crop_body::sample_pixel(f, ty, tx[ox], bgr);
        for (int c = 0; c < 3; ++c) o[c * plane + ox] = bgr[c];
      }
    }
  }
}

float crop_value(const CropParams& p, int64_t b, int c, int oy, int ox) {
  return crop_body::crop_element(p.faces[b], p.size, c, oy, ox);
}

}  // namespace e3dmm
