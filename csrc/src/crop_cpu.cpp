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

std::string crop_arg_name(const CropParams& p, CropArg arg, int64_t face) {
  if (p.naming && p.naming->name) return p.naming->name(arg, face);
  const std::string at = "faces[" + std::to_string(face) + "].";
  switch (arg) {
    case CropArg::Batch: return "batch";
    case CropArg::Size: return "size";
    case CropArg::OutType: return "out_type";
    case CropArg::Faces: return "faces";
    case CropArg::Out: return "out";
    case CropArg::Image: return at + "image";
    case CropArg::Height: return at + "height";
    case CropArg::Width: return at + "width";
    case CropArg::StrideY: return at + "stride_y";
    case CropArg::StrideX: return at + "stride_x";
    case CropArg::StrideC: return at + "stride_c";
    case CropArg::Strides: return at + "stride_y/stride_x/stride_c";
    case CropArg::Left: return at + "left (bl)";
    case CropArg::Top: return at + "top (bt)";
    case CropArg::Right: return at + "right (br)";
    case CropArg::Bottom: return at + "bottom (bb)";
  }
  return "?";
}

std::string crop_function(const CropParams& p, const char* fallback) {
  return p.naming && !p.naming->function.empty() ? p.naming->function : std::string(fallback);
}

namespace {

// Messages built with std::to_string (integers: no locale grouping), never with streams.
[[noreturn]] void fail(const CropParams& p, CropArg arg, int64_t face, const std::string& expected, int64_t found,
                       const char* function = "crop") {
  throw InvalidInput(crop_function(p, function) + ": " + crop_arg_name(p, arg, face) + ": expected " + expected +
                     ", found " + std::to_string(found));
}

[[noreturn]] void fail_null(const CropParams& p, CropArg arg, int64_t face, const std::string& expected) {
  throw InvalidInput(crop_function(p, "crop") + ": " + crop_arg_name(p, arg, face) + ": expected " + expected +
                     ", found null");
}

using cpu_common::in_range;
using cpu_common::thread_count;

int64_t magnitude(int64_t v) { return v < 0 ? -v : v; }  // callers bound v first: never INT64_MIN

}  // namespace

void validate(const CropParams& p) {
  if (p.batch < 0 || p.batch > kMaxCropBatch)
    fail(p, CropArg::Batch, -1, "a number of faces " + in_range(0, kMaxCropBatch), p.batch);
  if (p.size < 1 || p.size > kMaxCropSize) fail(p, CropArg::Size, -1, in_range(1, kMaxCropSize), p.size);
  if (p.out_type != CropOutType::Float32 && p.out_type != CropOutType::Float16)
    fail(p, CropArg::OutType, -1, "1 (float32) or 2 (float16)", (int64_t)p.out_type);
  if (p.batch == 0) return;  // nothing to read or write: the pointers may be null
  if (!p.faces) fail_null(p, CropArg::Faces, -1, "a pointer to " + std::to_string(p.batch) + " faces");
  if (!p.out) fail_null(p, CropArg::Out, -1, "a pointer to the [B, 3, size, size] buffer");
  // Strides may be as large as an image's extent needs, and no larger: every address the body forms
  // is image + y * stride_y + x * stride_x + c * stride_c with 0 <= y < H, 0 <= x < W, 0 <= c < 3.
  constexpr int64_t kMaxStride = int64_t(1) << 62;
  constexpr int64_t kMaxExtent = int64_t(1) << 62;
  for (int64_t b = 0; b < p.batch; ++b) {
    const CropFace& f = p.faces[b];
    if (!f.image) fail_null(p, CropArg::Image, b, "a pointer to the image");
    if (f.height < 1 || f.height > kMaxCropImageSide) fail(p, CropArg::Height, b, in_range(1, kMaxCropImageSide), f.height);
    if (f.width < 1 || f.width > kMaxCropImageSide) fail(p, CropArg::Width, b, in_range(1, kMaxCropImageSide), f.width);
    const int64_t strides[3] = {f.stride_y, f.stride_x, f.stride_c};
    const int64_t spans[3] = {f.height - 1, f.width - 1, 2};
    const CropArg names[3] = {CropArg::StrideY, CropArg::StrideX, CropArg::StrideC};
    int64_t extent = 0;
    for (int i = 0; i < 3; ++i) {
      if (strides[i] < -kMaxStride || strides[i] > kMaxStride)
        fail(p, names[i], b, "elements " + in_range(-kMaxStride, kMaxStride), strides[i]);
      int64_t part = 0;
      if (__builtin_mul_overflow(magnitude(strides[i]), spans[i], &part) ||
          __builtin_add_overflow(extent, part, &extent) || extent > kMaxExtent)
        throw InvalidInput(crop_function(p, "crop") + ": " + crop_arg_name(p, CropArg::Strides, b) +
                           ": expected strides whose extent over the " + std::to_string(f.height) + " x " +
                           std::to_string(f.width) + " x 3 image is at most 2^62 elements, found stride_y=" +
                           std::to_string(f.stride_y) + " stride_x=" + std::to_string(f.stride_x) +
                           " stride_c=" + std::to_string(f.stride_c));
    }
    const int64_t bounds[4] = {f.left, f.top, f.right, f.bottom};
    const CropArg bnames[4] = {CropArg::Left, CropArg::Top, CropArg::Right, CropArg::Bottom};
    for (int i = 0; i < 4; ++i)
      if (bounds[i] < -kMaxCropBound || bounds[i] > kMaxCropBound)
        fail(p, bnames[i], b, "a crop bound " + in_range(-kMaxCropBound, kMaxCropBound) + " (engine.crop's box rule)",
             bounds[i]);
    if (f.right <= f.left)
      fail(p, CropArg::Right, b,
           "> " + crop_arg_name(p, CropArg::Left, b) + " = " + std::to_string(f.left) + " (a crop at least 1 px wide)",
           f.right);
    if (f.bottom <= f.top)
      fail(p, CropArg::Bottom, b,
           "> " + crop_arg_name(p, CropArg::Top, b) + " = " + std::to_string(f.top) + " (a crop at least 1 px high)",
           f.bottom);
  }
}

void crop_cpu(const CropParams& p, int num_threads) {
  validate(p);
  if (p.out_type != CropOutType::Float32)
    fail(p, CropArg::OutType, -1, "1 (float32: crop_cpu writes float32 only; float16 is crop_cuda's)",
         (int64_t)p.out_type);
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
