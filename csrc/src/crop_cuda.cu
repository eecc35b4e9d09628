// The CUDA crop kernel: one launch for a whole batch of faces, a thin wrapper around crop_body.h.
//
// Grid: x = block of output pixels of one face (size * size of them), y = face. Each thread
// computes one output pixel: its row and column taps once, then the three channels, written
// straight into the network's input buffer [B, 3, size, size] (float32 or float16). Consecutive
// threads write consecutive pixels of one plane, so stores coalesce; the source reads are a
// gather (2 x 2 taps, HWC or CHW) that L1/L2 absorb, since neighbouring outputs share taps.
//
// The faces' parameters (80 bytes each) travel in a small device array: allocated, filled and
// freed in stream order (cudaMallocAsync / cudaMemcpyAsync / cudaFreeAsync on the caller's
// stream), so nothing waits on the host and the caller's host array may go right after the call
// (a copy from pageable memory returns once the bytes are staged).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "crop_body.h"
#include "e3dmm/crop.h"
#include "e3dmm/decode.h"
#include "e3dmm/errors.h"

namespace e3dmm {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ void store(float* o, float v) { *o = v; }
__device__ __forceinline__ void store(__half* o, float v) { *o = __float2half_rn(v); }  // 0..255: exact

template <typename OutT>
__global__ void __launch_bounds__(kThreads) crop_kernel(const CropFace* faces, int size, OutT* out) {
  const int plane = size * size;  // <= kMaxCropSize^2 = 2^24: 32-bit index arithmetic (int64 division is slow)
  const int pix = (int)(blockIdx.x * blockDim.x + threadIdx.x);
  if (pix >= plane) return;
  const CropFace f = faces[blockIdx.y];  // every thread of the block reads the same 80 bytes: broadcast loads
  const int oy = pix / size, ox = pix % size;
  const crop_body::AxisTaps ty = crop_body::row_taps(f, size, oy);
  const crop_body::AxisTaps tx = crop_body::col_taps(f, size, ox);
  OutT* o = out + (int64_t)blockIdx.y * 3 * plane + pix;  // B * 3 * plane may pass 2^31: int64
  float bgr[3];
  crop_body::sample_pixel(f, ty, tx, bgr);
#pragma unroll
  for (int c = 0; c < 3; ++c) store(o + (int64_t)c * plane, bgr[c]);
}

void check(const CropParams& p, cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear a non-sticky error so later calls start clean
    throw BackendError(crop_function(p, "crop_cuda") + ": " + what + " failed: " + cudaGetErrorString(err));
  }
}

std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", (unsigned long long)(uintptr_t)p);
  return buf;
}

// A clear error for a host (or foreign) pointer, instead of an illegal-address fault that would
// poison the whole CUDA context.
void expect_device_pointer(const CropParams& p, const void* ptr, CropArg arg, int64_t face) {
  const std::string at = crop_function(p, "crop_cuda") + ": " + crop_arg_name(p, arg, face) + ": expected ";
  cudaPointerAttributes a{};
  const cudaError_t err = cudaPointerGetAttributes(&a, ptr);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw InvalidInput(at + "a CUDA device pointer, found " + hex(ptr) + " (" + cudaGetErrorString(err) + ")");
  }
  if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
    throw InvalidInput(at + "a CUDA device pointer, found " +
                       (a.type == cudaMemoryTypeHost ? "pinned host memory " : "host memory ") + hex(ptr));
  int current = 0;
  check(p, cudaGetDevice(&current), "cudaGetDevice");
  if (a.type == cudaMemoryTypeDevice && a.device != current)
    throw InvalidInput(at + "memory on the current device (" + std::to_string(current) + "), found memory of device " +
                       std::to_string(a.device) + " at " + hex(ptr));
}

}  // namespace

void crop_cuda(const CropParams& p, void* stream) {
  validate(p);  // first: argument errors are reported the same on every machine
  if (cuda_device_count() == 0)
    throw Unavailable(crop_function(p, "crop_cuda") + ": no CUDA device is available (driver or GPU missing)");
  if (p.batch == 0) return;
  expect_device_pointer(p, p.out, CropArg::Out, -1);
  const uint8_t* last = nullptr;  // faces of one image share its pointer: check each image once
  for (int64_t b = 0; b < p.batch; ++b)
    if (p.faces[b].image != last) {
      last = p.faces[b].image;
      expect_device_pointer(p, last, CropArg::Image, b);
    }
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const size_t bytes = sizeof(CropFace) * (size_t)p.batch;
  void* d_faces = nullptr;
  check(p, cudaMallocAsync(&d_faces, bytes, s), "cudaMallocAsync of the faces' parameters");
  cudaError_t err = cudaMemcpyAsync(d_faces, p.faces, bytes, cudaMemcpyHostToDevice, s);
  if (err == cudaSuccess) {
    const int64_t plane = (int64_t)p.size * p.size;
    const dim3 grid((unsigned)((plane + kThreads - 1) / kThreads), (unsigned)p.batch);  // validate(): B <= 65535
    const CropFace* faces = static_cast<const CropFace*>(d_faces);
    if (p.out_type == CropOutType::Float16)
      crop_kernel<__half><<<grid, kThreads, 0, s>>>(faces, p.size, static_cast<__half*>(p.out));
    else
      crop_kernel<float><<<grid, kThreads, 0, s>>>(faces, p.size, static_cast<float*>(p.out));
    err = cudaGetLastError();
  }
  const cudaError_t freed = cudaFreeAsync(d_faces, s);  // in stream order: after the kernel has read it
  check(p, err, "copying the faces' parameters or launching the kernel");
  check(p, freed, "cudaFreeAsync of the faces' parameters");
}

}  // namespace e3dmm
