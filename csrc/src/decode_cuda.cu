// The CUDA decode kernel: a thin launch around body::decode_vertex.
//
// Grid: x = batch tile (fastest varying, so the blocks resident together work on the
// same vertices and share the basis slice through L2), y = block of vertices.
// Each block copies its tile's coefficients to shared memory once (the optional expression
// weights are read from global memory: a broadcast per weight, and no shared memory beyond
// the 48 KiB of Ks + Kt at their bounds); each thread then
// computes one vertex for up to Tile batch rows (body::tile_for: 1, 4 or 16). Consecutive threads read
// consecutive basis columns of one component row (K-major layout), so loads coalesce.
#include <cuda_runtime.h>

#include <cmath>

#include "decode_body.h"
#include "e3dmm/limits.h"
#include "e3dmm/decode.h"
#include "e3dmm/errors.h"

namespace e3dmm {
namespace {

constexpr int kThreads = 128;

template <int Tile, typename BasisT>
__global__ void decode_kernel(DecodeParams p, int* nonfinite_flag) {
  extern __shared__ float coef[];  // [nb][Ks + Kt]: alpha then beta
  const int ks = p.shape_components, kt = p.tex_components, width = ks + kt;
  const int64_t b0 = (int64_t)blockIdx.x * Tile;
  const int nb = (int)min((int64_t)Tile, p.batch - b0);
  bool bad = false;
  for (int i = threadIdx.x; i < nb * width; i += blockDim.x) {
    const int r = i / width, k = i % width;
    const float* row = p.coeffs + (b0 + r) * p.coeff_stride;
    const float c = k < ks ? row[p.shape_offset + k] : row[p.tex_offset + (k - ks)];
    bad |= !isfinite(c);
    coef[i] = c;
  }
  // The expression weights stay in global memory (decode_body.h reads them there); checked here.
  if (p.expr_coeffs)
    for (int i = threadIdx.x; i < nb * p.expr_components; i += blockDim.x)
      bad |= !isfinite(p.expr_coeffs[b0 * p.expr_components + i]);
  if (bad && nonfinite_flag) atomicOr(nonfinite_flag, 1);
  __syncthreads();
  const int64_t v = (int64_t)blockIdx.y * blockDim.x + threadIdx.x;
  if (v < p.num_vertices) body::decode_vertex<Tile, BasisT>(p, coef, width, 0, ks, b0, nb, v);
}

// The launch below asks for sizeof(float) * tile * (Ks + Kt) bytes of dynamic shared memory;
// 48 KiB is what every GPU grants a block without cudaFuncSetAttribute. The model bounds keep
// the largest tile within it (found when the bounds were first set above it: a BackendError
// at batch >= 5 for Ks + Kt > 768).
static_assert(sizeof(float) * body::kTile * 2 * kMaxComponents <= 48 * 1024,
              "kMaxComponents too large for the CUDA kernel's shared-memory tile");

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw BackendError(std::string("decode_cuda: ") + what + " failed: " + cudaGetErrorString(err));
  }
}

}  // namespace

bool cuda_compiled() { return true; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

void decode_cuda(const DecodeParams& p, void* stream, int* nonfinite_flag) {
  if (cuda_device_count() == 0) throw Unavailable("decode_cuda: no CUDA device is available (driver or GPU missing)");
  validate(p);
  const int64_t vblocks = (p.num_vertices + kThreads - 1) / kThreads;
  if (vblocks > 65535)
    throw InvalidInput("decode_cuda: num_vertices: expected <= " + std::to_string(65535LL * kThreads) +
                       ", found " + std::to_string(p.num_vertices));
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  body::with_tile(p.batch, [&](auto tile) {
    constexpr int kT = decltype(tile)::value;
    const int64_t btiles = (p.batch + kT - 1) / kT;
    if (btiles > 2147483647LL) throw InvalidInput("decode_cuda: batch: too large, found " + std::to_string(p.batch));
    const size_t smem = sizeof(float) * kT * (size_t)(p.shape_components + p.tex_components);
    const dim3 grid((unsigned)btiles, (unsigned)vblocks);
    if (p.basis_type == BasisType::Float16)
      decode_kernel<kT, uint16_t><<<grid, kThreads, smem, s>>>(p, nonfinite_flag);
    else
      decode_kernel<kT, float><<<grid, kThreads, smem, s>>>(p, nonfinite_flag);
  });
  check(cudaGetLastError(), "kernel launch");
}

}  // namespace e3dmm
