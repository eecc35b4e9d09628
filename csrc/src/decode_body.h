// The CUDA kernel's per-thread body, written as a __host__ __device__ function of
// plain arguments so that the CPU test suite can run the very same code over the
// whole index space (decode_cuda_body_on_host) and check the GPU indexing without a GPU.
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "e3dmm/decode.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define E3DMM_HD __host__ __device__ __forceinline__
#define E3DMM_UNROLL _Pragma("unroll")
// Unrolling k keeps several basis loads in flight per thread: at small B the kernel
// is bound by memory latency x parallelism, not by arithmetic.
#define E3DMM_UNROLL_K _Pragma("unroll 4")
#else
#define E3DMM_HD inline
#define E3DMM_UNROLL
#define E3DMM_UNROLL_K
#endif

namespace e3dmm {
namespace body {

// IEEE binary16 bits -> float. Portable, exact for every input (normals,
// subnormals, infinities, NaN); the device path uses the hardware conversion.
E3DMM_HD float half_bits_to_float(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1fu) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);  // normal: rebias 15 -> 127
  } else if (mant == 0) {
    bits = sign;  // signed zero
  } else {
    // subnormal half: normalise into a float
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    bits = sign | ((uint32_t)(112 - e) << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

E3DMM_HD float load_basis(const float* p, int64_t i) { return p[i]; }
E3DMM_HD float load_basis(const uint16_t* p, int64_t i) { return half_bits_to_float(p[i]); }

// Colour rule of the release: clamp to [0, 255], then truncate. A NaN maps to 0 (the
// first comparison is false for it), so the float -> int conversion is always defined.
// Written as comparisons, not fmaxf/fminf: without -ffinite-math-only GCC does not inline
// those and calls libm per element, which cost about a third of the CPU kernel's time.
E3DMM_HD uint8_t to_color(float v) {
  v = v > 0.0f ? v : 0.0f;
  v = v < 255.0f ? v : 255.0f;
  return (uint8_t)(int)v;
}

// Largest batch tile one thread handles; the accumulators live in registers. Every loop
// over the tile therefore runs to the compile-time Tile (unrolled, `if (r < nb)` inside)
// and nothing takes an accumulator's address: a runtime index or a pointer would move the
// whole array to local memory on the GPU (ptxas -v then reports a 192-byte stack frame).
constexpr int kTile = 16;

// The tile a batch is decoded with: small batches get small tiles, so that a thread holds
// only the accumulators it uses (3 x Tile registers). At B = 1 the kernel is bound by
// memory latency, and fewer registers per thread mean more threads in flight per SM.
constexpr int tile_for(int64_t batch) { return batch <= 1 ? 1 : batch <= 4 ? 4 : kTile; }

// Calls f(std::integral_constant<int, Tile>{}) with the tile of `batch`.
template <typename F>
inline void with_tile(int64_t batch, F&& f) {
  switch (tile_for(batch)) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    default: f(std::integral_constant<int, kTile>{}); break;
  }
}

// The float's 4 bytes at an unaligned address (PLY records are 15 bytes), from a value
// rather than from memory, so the accumulator stays in a register.
E3DMM_HD void store_float_bytes(uint8_t* dst, float v) {
#if defined(__CUDA_ARCH__)
  const uint32_t u = __float_as_uint(v);
  dst[0] = (uint8_t)u;  // little-endian, like the host and the PLY header's binary_little_endian
  dst[1] = (uint8_t)(u >> 8);
  dst[2] = (uint8_t)(u >> 16);
  dst[3] = (uint8_t)(u >> 24);
#else
  memcpy(dst, &v, sizeof v);
#endif
}

// acc[r] = (m0, m1, m2) for every row of the tile (rows beyond nb too: never stored).
template <int Tile>
E3DMM_HD void init_acc(float (&acc)[Tile][3], float m0, float m1, float m2) {
E3DMM_UNROLL
  for (int r = 0; r < Tile; ++r) {
    acc[r][0] = m0;
    acc[r][1] = m1;
    acc[r][2] = m2;
  }
}

// acc[r] += sum_k coef[r * coef_stride + offset + k] * basis[k][col .. col + 2] for the tile's
// rows r < nb, k in order. Loops run to the compile-time Tile so that acc stays in registers.
template <int Tile, typename BasisT>
E3DMM_HD void add_terms(float (&acc)[Tile][3], const BasisT* basis, int K, int64_t n3, int64_t col,
                        const float* coef, int coef_stride, int offset, int nb) {
  E3DMM_UNROLL_K
  for (int k = 0; k < K; ++k) {
    const float b0 = load_basis(basis, k * n3 + col);
    const float b1 = load_basis(basis, k * n3 + col + 1);
    const float b2 = load_basis(basis, k * n3 + col + 2);
E3DMM_UNROLL
    for (int r = 0; r < Tile; ++r) {
      if (r < nb) {
        const float c = coef[r * coef_stride + offset + k];
        acc[r][0] = fmaf(c, b0, acc[r][0]);
        acc[r][1] = fmaf(c, b1, acc[r][1]);
        acc[r][2] = fmaf(c, b2, acc[r][2]);
      }
    }
  }
}

// acc[r] = mean[col .. col + 2] + sum_k coef[r * coef_stride + offset + k] * basis[k][col .. col + 2]
// for the tile's rows r < nb (rows beyond nb are left at the mean).
template <int Tile, typename BasisT>
E3DMM_HD void accumulate_vertex(float (&acc)[Tile][3], const float* mean, const BasisT* basis, int K, int64_t n3,
                                int64_t col, const float* coef, int coef_stride, int offset, int nb) {
  init_acc<Tile>(acc, mean[col], mean[col + 1], mean[col + 2]);
  add_terms<Tile>(acc, basis, K, n3, col, coef, coef_stride, offset, nb);
}

// One thread's work: vertex `v` for batch rows b0 .. b0 + nb - 1 (nb <= Tile).
// `coef` points at the tile's coefficients: row r (0 <= r < nb) has alpha at
// coef[r * coef_stride + shape_offset + k] and beta at coef[r * coef_stride + tex_offset + k]
// (on the GPU a shared-memory copy, on the host the caller's rows). With p.expr_coeffs set,
// the expression term follows alpha's: its weights are read from p.expr_coeffs directly (on
// the GPU every thread of a block reads the same word at a time: one broadcast load).
template <int Tile, typename BasisT>
E3DMM_HD void decode_vertex(const DecodeParams& p, const float* coef, int coef_stride, int shape_offset,
                            int tex_offset, int64_t b0, int nb, int64_t v) {
  const int64_t n3 = 3 * p.num_vertices;
  const int64_t col = 3 * v;
  const BasisT* shape_basis = static_cast<const BasisT*>(p.shape_basis);
  const BasisT* tex_basis = static_cast<const BasisT*>(p.tex_basis);

  float acc[Tile][3];
  // Shape: the mean (plus the expression mean) plus the folded basis times alpha (then the
  // expression basis times e): the order of decode.h.
  if (p.expr_coeffs) {
    init_acc<Tile>(acc, p.shape_mean[col] + p.expr_mean[col], p.shape_mean[col + 1] + p.expr_mean[col + 1],
                   p.shape_mean[col + 2] + p.expr_mean[col + 2]);
    add_terms<Tile>(acc, shape_basis, p.shape_components, n3, col, coef, coef_stride, shape_offset, nb);
    add_terms<Tile>(acc, static_cast<const BasisT*>(p.expr_basis), p.expr_components, n3, col,
                    p.expr_coeffs + b0 * p.expr_components, p.expr_components, 0, nb);
  } else {
    accumulate_vertex<Tile>(acc, p.shape_mean, shape_basis, p.shape_components, n3, col, coef, coef_stride,
                            shape_offset, nb);
  }
E3DMM_UNROLL
  for (int r = 0; r < Tile; ++r) {
    if (r >= nb) continue;
    const int64_t b = b0 + r;
    if (p.vertices) {
      float* out = p.vertices + b * n3 + col;
      out[0] = acc[r][0];
      out[1] = acc[r][1];
      out[2] = acc[r][2];
    }
    if (p.records) {
      uint8_t* rec = p.records + (b * p.num_vertices + v) * kRecordBytes;
      store_float_bytes(rec, acc[r][0]);
      store_float_bytes(rec + 4, acc[r][1]);
      store_float_bytes(rec + 8, acc[r][2]);
    }
  }

  // Texture: same sum with beta, then the release's clamp-and-truncate.
  accumulate_vertex<Tile>(acc, p.tex_mean, tex_basis, p.tex_components, n3, col, coef, coef_stride, tex_offset, nb);
E3DMM_UNROLL
  for (int r = 0; r < Tile; ++r) {
    if (r >= nb) continue;
    const int64_t b = b0 + r;
    const uint8_t c0 = to_color(acc[r][0]), c1 = to_color(acc[r][1]), c2 = to_color(acc[r][2]);
    if (p.colors) {
      uint8_t* out = p.colors + b * n3 + col;
      out[0] = c0;
      out[1] = c1;
      out[2] = c2;
    }
    if (p.records) {
      uint8_t* rec = p.records + (b * p.num_vertices + v) * kRecordBytes + 12;
      rec[0] = c0;
      rec[1] = c1;
      rec[2] = c2;
    }
  }
}

}  // namespace body
}  // namespace e3dmm
