// CPU decode kernel, compiled once per instruction set (see decode_cpu_*.cpp): the
// including file defines E3DMM_ISA_NS and is built with that ISA's compiler flags.
//
// Blocking, and why:
//  - Columns (3N floats) are cut into blocks of kBlockCols. Threads take whole blocks,
//    so each basis element is read from DRAM exactly once per call, whatever B is.
//  - Within a block, batch rows go in tiles of up to kRowTile; the block's basis slice
//    (K x kBlockCols, 150 KB in float32) stays in L2 across tiles.
//  - The inner kernel keeps a register tile (rows x 32 or 64 columns) for the whole k
//    loop, so each FMA needs one broadcast coefficient and no accumulator traffic;
//    float16 bases are widened in registers (vcvtph2ps), never in memory.
//  - B = 1 has nothing to reuse, so it streams instead: wide blocks, 8 basis rows per
//    pass over the accumulators (see accumulate_stream).
// No full-size temporaries: outputs are written from the accumulators per block.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "decode_body.h"
#include "e3dmm/decode.h"

namespace e3dmm {
namespace E3DMM_ISA_NS {

typedef float v16 __attribute__((vector_size(64)));

constexpr int kBlockCols = 384;  // 128 vertices; a multiple of 3 and of 16
constexpr int kRowTile = 8;
constexpr int kWideCols = 12288;  // B = 1 blocks: at most 4096 vertices, 48 KB per float32 row run
constexpr int kStreamRows = 8;    // B = 1: basis rows streamed together per pass over the accumulators

inline v16 load16(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline v16 load16(const uint16_t* p) {
#if defined(__AVX512F__)
  return (v16)_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif defined(__F16C__)
  const __m256 lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256 hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
  v16 v;
  std::memcpy(&v, &lo, 32);
  std::memcpy(reinterpret_cast<char*>(&v) + 32, &hi, 32);
  return v;
#else
  v16 v;
  for (int i = 0; i < 16; ++i) v[i] = body::half_bits_to_float(p[i]);
  return v;
#endif
}

inline float load1(const float* p) { return *p; }
inline float load1(const uint16_t* p) { return body::half_bits_to_float(*p); }

// acc[r][0..w) += sum_k coef[r][k] * basis[k][col0 .. col0 + w), for NB rows.
// Register-blocked: a tile of NB rows x NV vectors of 16 columns stays in registers
// for the whole k loop (no accumulator traffic); the block's basis slice comes from
// L2 after the first batch tile, and is prefetched a few lines ahead on the first.
template <int NB, int NV, typename BasisT>
inline void accumulate_regs(float (*acc)[kBlockCols], const BasisT* basis, int64_t n3, int64_t col0, int j,
                            int K, const float* coef, int64_t coef_stride) {
  v16 a[NB][NV];
  for (int r = 0; r < NB; ++r)
    for (int q = 0; q < NV; ++q) a[r][q] = *reinterpret_cast<const v16*>(&acc[r][j + 16 * q]);
  const BasisT* bk = basis + col0 + j;
  // Software prefetch (to L2) of the lines of this row that the next column block needs:
  // the hardware cannot track K interleaved streams, so without it the first batch
  // tile of every block waits on DRAM. One prefetch covers one line, hence the loop.
  constexpr int kStep = 16 * NV;                              // columns per step
  constexpr int kLineElems = 64 / (int)sizeof(BasisT);        // elements per cache line
  for (int k = 0; k < K; ++k, bk += n3) {
    for (int e = 0; e < kStep; e += kLineElems) __builtin_prefetch(bk + kBlockCols + e, 0, 2);
    v16 x[NV];
    for (int q = 0; q < NV; ++q) x[q] = load16(bk + 16 * q);
    for (int r = 0; r < NB; ++r) {
      const float c = coef[r * coef_stride + k];
      for (int q = 0; q < NV; ++q) a[r][q] += c * x[q];
    }
  }
  for (int r = 0; r < NB; ++r)
    for (int q = 0; q < NV; ++q) *reinterpret_cast<v16*>(&acc[r][j + 16 * q]) = a[r][q];
}

// The same sums for a single row, k outermost: kStreamRows basis rows are streamed at a
// time across the block (long contiguous runs the hardware prefetcher follows), and the
// accumulators (one wide block, L1/L2-resident) are loaded and stored once per group.
// At B = 1 the kernel is bound by memory bandwidth, and 99 short interleaved streams
// (the register-blocked order) prefetch poorly. Measured on the 2-core Zen 4 machine:
// 8 rows x 12288 columns beat 4 x 3072 by 10-25% (bench/results/decode_cpu.md).
// Per element the FMAs run in the same k order, so both variants round identically.
template <typename BasisT>
inline void accumulate_stream(float* acc, const BasisT* basis, int64_t n3, int64_t col0, int w, int K,
                              const float* coef) {
  constexpr int G = kStreamRows;
  const int wv = w / 16 * 16;
  int k = 0;
  for (; k + G <= K; k += G) {
    float c[G];
    const BasisT* b[G];
    for (int g = 0; g < G; ++g) {
      c[g] = coef[k + g];
      b[g] = basis + (int64_t)(k + g) * n3 + col0;
    }
    for (int j = 0; j < wv; j += 16) {
      v16 a = *reinterpret_cast<const v16*>(acc + j);
      for (int g = 0; g < G; ++g) a += c[g] * load16(b[g] + j);
      *reinterpret_cast<v16*>(acc + j) = a;
    }
    for (int j = wv; j < w; ++j) {
      float a = acc[j];
      for (int g = 0; g < G; ++g) a = fmaf(c[g], load1(b[g] + j), a);
      acc[j] = a;
    }
  }
  for (; k < K; ++k) {
    const BasisT* b0 = basis + (int64_t)k * n3 + col0;
    for (int j = 0; j < wv; j += 16) {
      v16 a = *reinterpret_cast<const v16*>(acc + j);
      a += coef[k] * load16(b0 + j);
      *reinterpret_cast<v16*>(acc + j) = a;
    }
    for (int j = wv; j < w; ++j) acc[j] = fmaf(coef[k], load1(b0 + j), acc[j]);
  }
}

template <int NB, typename BasisT>
inline void accumulate(float (*acc)[kBlockCols], const BasisT* basis, int64_t n3, int64_t col0, int w,
                       int K, const float* coef, int64_t coef_stride) {
  // Few rows give few independent FMA chains: widen the tile to hide FMA latency.
  constexpr int NV = NB <= 2 ? 4 : 2;
  int j = 0;
  for (; j + 16 * NV <= w; j += 16 * NV) accumulate_regs<NB, NV>(acc, basis, n3, col0, j, K, coef, coef_stride);
  for (; j + 16 <= w; j += 16) accumulate_regs<NB, 1>(acc, basis, n3, col0, j, K, coef, coef_stride);
  for (; j < w; ++j) {  // the last < 16 columns of the model
    for (int r = 0; r < NB; ++r) {
      float s = acc[r][j];
      // fmaf, like the vector loop's contracted FMAs, so both basis types round alike.
      for (int k = 0; k < K; ++k) s = fmaf(coef[r * coef_stride + k], load1(basis + (int64_t)k * n3 + col0 + j), s);
      acc[r][j] = s;
    }
  }
}

// The shape accumulators' start: the mean, plus the expression mean when the term is on
// (one float addition per value, as decode_body.h's init).
inline void init_shape(float* acc, const DecodeParams& p, int64_t col0, int w) {
  std::memcpy(acc, p.shape_mean + col0, w * sizeof(float));
  if (p.expr_coeffs)
    for (int j = 0; j < w; ++j) acc[j] += p.expr_mean[col0 + j];
}

template <int NB, typename BasisT>
inline void accumulate_tile(float (*acc_s)[kBlockCols], float (*acc_t)[kBlockCols], const DecodeParams& p,
                            int64_t b0, int64_t col0, int w) {
  const int64_t n3 = 3 * p.num_vertices;
  for (int r = 0; r < NB; ++r) {
    init_shape(acc_s[r], p, col0, w);
    std::memcpy(acc_t[r], p.tex_mean + col0, w * sizeof(float));
  }
  const float* coef = p.coeffs + b0 * p.coeff_stride;
  accumulate<NB>(acc_s, static_cast<const BasisT*>(p.shape_basis), n3, col0, w, p.shape_components,
                 coef + p.shape_offset, p.coeff_stride);
  if (p.expr_coeffs)  // the expression term after alpha's (decode.h's order)
    accumulate<NB>(acc_s, static_cast<const BasisT*>(p.expr_basis), n3, col0, w, p.expr_components,
                   p.expr_coeffs + b0 * p.expr_components, p.expr_components);
  accumulate<NB>(acc_t, static_cast<const BasisT*>(p.tex_basis), n3, col0, w, p.tex_components,
                 coef + p.tex_offset, p.coeff_stride);
}

template <typename BasisT>
inline void run_tile(int nb, float (*acc_s)[kBlockCols], float (*acc_t)[kBlockCols], const DecodeParams& p,
                     int64_t b0, int64_t col0, int w) {
  switch (nb) {
    case 8: accumulate_tile<8, BasisT>(acc_s, acc_t, p, b0, col0, w); break;
    case 7: accumulate_tile<7, BasisT>(acc_s, acc_t, p, b0, col0, w); break;
    case 6: accumulate_tile<6, BasisT>(acc_s, acc_t, p, b0, col0, w); break;
    case 5: accumulate_tile<5, BasisT>(acc_s, acc_t, p, b0, col0, w); break;
    case 4: accumulate_tile<4, BasisT>(acc_s, acc_t, p, b0, col0, w); break;
    case 3: accumulate_tile<3, BasisT>(acc_s, acc_t, p, b0, col0, w); break;
    case 2: accumulate_tile<2, BasisT>(acc_s, acc_t, p, b0, col0, w); break;
    default: accumulate_tile<1, BasisT>(acc_s, acc_t, p, b0, col0, w); break;
  }
}

// Writes the tile's outputs for columns [col0, col0 + w) from the accumulators.
template <int BW>
inline void store_tile(int nb, const float (*acc_s)[BW], const float (*acc_t)[BW], const DecodeParams& p, int64_t b0,
                       int64_t col0, int w) {
  const int64_t n3 = 3 * p.num_vertices;
  for (int r = 0; r < nb; ++r) {
    const int64_t b = b0 + r;
    alignas(64) uint8_t col8[BW];
    for (int j = 0; j < w; ++j) col8[j] = body::to_color(acc_t[r][j]);
    if (p.vertices) std::memcpy(p.vertices + b * n3 + col0, acc_s[r], w * sizeof(float));
    if (p.colors) std::memcpy(p.colors + b * n3 + col0, col8, w);
    if (p.records) {
      uint8_t* rec = p.records + (b * p.num_vertices + col0 / 3) * kRecordBytes;
      for (int v = 0; v < w / 3; ++v, rec += kRecordBytes) {
        std::memcpy(rec, &acc_s[r][3 * v], 12);
        std::memcpy(rec + 12, &col8[3 * v], 3);
      }
    }
  }
}

// Calls fn(col0, w, acc_s, acc_t) for every block of `step` (<= BW) columns, the blocks
// shared out among the threads; each thread owns ROWS x BW accumulators per basis. They
// live on the heap (up to 96 KB per thread: too much for a caller's small thread stack),
// allocated here, before the parallel region, so a failure throws std::bad_alloc.
template <int ROWS, int BW, typename Fn>
void for_each_block(const DecodeParams& p, int num_threads, int64_t step, Fn&& fn) {
  const int64_t n3 = 3 * p.num_vertices;
  const int64_t nblocks = (n3 + step - 1) / step;
#if defined(_OPENMP)
  const int nt = num_threads > 0 ? num_threads : omp_get_max_threads();
#else
  const int nt = 1;
  (void)num_threads;
#endif
  constexpr size_t kBytes = sizeof(float[ROWS][BW]);  // a multiple of 64: aligned_alloc's rule
  struct Free {
    void operator()(void* q) const { std::free(q); }
  };
  std::unique_ptr<void, Free> mem(std::aligned_alloc(64, 2 * kBytes * nt));
  if (!mem) throw std::bad_alloc();
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt)
#endif
  {
#if defined(_OPENMP)
    char* mine = static_cast<char*>(mem.get()) + 2 * kBytes * omp_get_thread_num();
#else
    char* mine = static_cast<char*>(mem.get());
#endif
    auto acc_s = reinterpret_cast<float(*)[BW]>(mine);
    auto acc_t = reinterpret_cast<float(*)[BW]>(mine + kBytes);
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const int64_t col0 = blk * step;
      fn(col0, (int)std::min<int64_t>(step, n3 - col0), acc_s, acc_t);
    }
  }
}

// B > 1: within a block, tiles of kRowTile rows reuse the block's basis slice from L2.
template <typename BasisT>
void decode_batched(const DecodeParams& p, int num_threads) {
  for_each_block<kRowTile, kBlockCols>(p, num_threads, kBlockCols, [&](int64_t col0, int w, auto acc_s, auto acc_t) {
    for (int64_t b0 = 0; b0 < p.batch; b0 += kRowTile) {
      const int nb = (int)std::min<int64_t>(kRowTile, p.batch - b0);
      run_tile<BasisT>(nb, acc_s, acc_t, p, b0, col0, w);
      store_tile<kBlockCols>(nb, acc_s, acc_t, p, b0, col0, w);
    }
  });
}

// B = 1: nothing to reuse across batch tiles, so the blocks are wide (long contiguous
// runs per basis row) and each basis row is streamed once, k outermost. The width is
// cut so that every thread gets the same number of equal blocks (a ragged last block
// would leave one core idle for up to a block's time).
inline int64_t single_row_step(int64_t n3, int num_threads) {
#if defined(_OPENMP)
  const int64_t nt = num_threads > 0 ? num_threads : omp_get_max_threads();
#else
  const int64_t nt = 1;
  (void)num_threads;
#endif
  const int64_t per_thread = (n3 + nt - 1) / nt;
  const int64_t blocks = (per_thread + kWideCols - 1) / kWideCols;  // per thread
  const int64_t step = ((per_thread + blocks - 1) / blocks + 47) / 48 * 48;  // whole vertices, whole vectors
  return std::min<int64_t>(kWideCols, step);
}

template <typename BasisT>
void decode_single_row(const DecodeParams& p, int num_threads) {
  const int64_t n3 = 3 * p.num_vertices;
  const int64_t step = single_row_step(n3, num_threads);
  for_each_block<1, kWideCols>(p, num_threads, step, [&](int64_t col0, int w, auto acc_s, auto acc_t) {
    init_shape(acc_s[0], p, col0, w);
    std::memcpy(acc_t[0], p.tex_mean + col0, w * sizeof(float));
    accumulate_stream(acc_s[0], static_cast<const BasisT*>(p.shape_basis), n3, col0, w, p.shape_components,
                      p.coeffs + p.shape_offset);
    if (p.expr_coeffs)
      accumulate_stream(acc_s[0], static_cast<const BasisT*>(p.expr_basis), n3, col0, w, p.expr_components,
                        p.expr_coeffs);
    accumulate_stream(acc_t[0], static_cast<const BasisT*>(p.tex_basis), n3, col0, w, p.tex_components,
                      p.coeffs + p.tex_offset);
    store_tile<kWideCols>(1, acc_s, acc_t, p, 0, col0, w);
  });
}

void decode(const DecodeParams& p, int num_threads) {
  const bool half = p.basis_type == BasisType::Float16;
  if (p.batch == 1)
    half ? decode_single_row<uint16_t>(p, num_threads) : decode_single_row<float>(p, num_threads);
  else
    half ? decode_batched<uint16_t>(p, num_threads) : decode_batched<float>(p, num_threads);
}

}  // namespace E3DMM_ISA_NS
}  // namespace e3dmm
