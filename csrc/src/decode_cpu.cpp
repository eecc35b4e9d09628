// Argument checks, the non-finite policy and the run-time choice of CPU kernel.
#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>

#if defined(E3DMM_HAVE_X86_KERNELS)
#include <cpuid.h>
#endif

#include "cpu_common.h"
#include "decode_body.h"
#include "e3dmm/decode.h"
#include "e3dmm/errors.h"
#include "e3dmm/limits.h"

namespace e3dmm {
namespace isa_avx512 { void decode(const DecodeParams&, int); }
namespace isa_avx2 { void decode(const DecodeParams&, int); }
namespace isa_generic { void decode(const DecodeParams&, int); }

namespace {

// Messages are built with std::to_string (integers: no locale grouping) and never with
// streams, which take the global C++ locale and could print 1.234.567 under de_DE.
[[noreturn]] void fail(const char* field, const std::string& expected, int64_t found) {
  throw InvalidInput(std::string("decode: ") + field + ": expected " + expected + ", found " + std::to_string(found));
}

using cpu_common::in_range;

}  // namespace

// Every count is bounded (limits.h) and every sum is formed in int64, so no check here can
// wrap, and every index the kernels form (b * coeff_stride, b * N * 15, k * 3N, r * coeff_stride
// + offset + k in decode_body.h's int arithmetic) fits its type.
void validate(const DecodeParams& p) {
  if (p.num_vertices < 1 || p.num_vertices > kMaxVertices) fail("num_vertices", in_range(1, kMaxVertices), p.num_vertices);
  if (p.shape_components < 0 || p.shape_components > kMaxComponents)
    fail("shape_components", in_range(0, kMaxComponents), p.shape_components);
  if (p.tex_components < 0 || p.tex_components > kMaxComponents)
    fail("tex_components", in_range(0, kMaxComponents), p.tex_components);
  if (p.batch < 1 || p.batch > kMaxBatch) fail("batch", "a number of coefficient rows " + in_range(1, kMaxBatch), p.batch);
  if (p.basis_type != BasisType::Float32 && p.basis_type != BasisType::Float16)
    fail("basis_type", "1 (float32) or 2 (float16)", (int64_t)p.basis_type);
  if (p.coeff_stride < 0 || p.coeff_stride > kMaxCoeffStride)
    fail("coeff_stride", in_range(0, kMaxCoeffStride), p.coeff_stride);
  if (p.shape_offset < 0) fail("shape_offset", ">= 0", p.shape_offset);
  if (p.tex_offset < 0) fail("tex_offset", ">= 0", p.tex_offset);
  const int64_t shape_end = (int64_t)p.shape_offset + p.shape_components;
  const int64_t tex_end = (int64_t)p.tex_offset + p.tex_components;
  if (shape_end > p.coeff_stride)
    fail("coeff_stride", ">= shape_offset + shape_components = " + std::to_string(shape_end), p.coeff_stride);
  if (tex_end > p.coeff_stride)
    fail("coeff_stride", ">= tex_offset + tex_components = " + std::to_string(tex_end), p.coeff_stride);
  if (!p.coeffs) throw InvalidInput("decode: coeffs: expected a pointer, found null");
  if (!p.shape_mean || !p.tex_mean) throw InvalidInput("decode: shape_mean/tex_mean: expected pointers, found null");
  if ((p.shape_components > 0 && !p.shape_basis) || (p.tex_components > 0 && !p.tex_basis))
    throw InvalidInput("decode: shape_basis/tex_basis: expected pointers, found null");
  if (!p.vertices && !p.colors && !p.records)
    throw InvalidInput("decode: outputs: expected at least one of vertices, colors, records; found none");
  if (p.expr_coeffs) {  // the optional expression term
    if (p.expr_components < 1 || p.expr_components > kMaxComponents)
      fail("expr_components", in_range(1, kMaxComponents) + " (expression weights were given)", p.expr_components);
    if (!p.expr_basis || !p.expr_mean)
      throw InvalidInput("decode: expr_basis/expr_mean: expected pointers (expression weights were given), found null");
  }
}

namespace {

// Policy: NaN or Inf coefficients are an input error; nothing is written.
void check_finite(const DecodeParams& p) {
  for (int64_t b = 0; b < p.batch; ++b) {
    const float* row = p.coeffs + b * p.coeff_stride;
    for (const auto& part : {std::make_pair(p.shape_offset, p.shape_components),
                             std::make_pair(p.tex_offset, p.tex_components)})
      for (int k = 0; k < part.second; ++k) {
        const float c = row[part.first + k];
        if (!std::isfinite(c))
          throw InvalidInput("decode: coeffs[" + std::to_string(b) + ", " + std::to_string(part.first + k) +
                             "]: expected a finite number, found " + (std::isnan(c) ? "nan" : c > 0 ? "inf" : "-inf"));
      }
    if (p.expr_coeffs)
      for (int k = 0; k < p.expr_components; ++k) {
        const float c = p.expr_coeffs[b * p.expr_components + k];
        if (!std::isfinite(c))
          throw InvalidInput("decode: expression[" + std::to_string(b) + ", " + std::to_string(k) +
                             "]: expected a finite number, found " + (std::isnan(c) ? "nan" : c > 0 ? "inf" : "-inf"));
      }
  }
}

enum class Isa { Avx512, Avx2, Generic };

// The best kernel this CPU runs. E3DMM_CPU_KERNEL=avx2|generic picks a lesser one
// (tests use it to check every code path on one machine); a kernel the CPU cannot
// run is never picked.
Isa pick_isa() {
  const char* want = std::getenv("E3DMM_CPU_KERNEL");
  const std::string w = want ? want : "";
#if defined(E3DMM_HAVE_X86_KERNELS)
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  // F16C through cpuid: clang (14) has no "f16c" for __builtin_cpu_supports.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
  if (w == "generic") return Isa::Generic;
  if (avx512 && w != "avx2") return Isa::Avx512;
  if (avx2) return Isa::Avx2;
#endif
  return Isa::Generic;
}

const Isa kIsa = pick_isa();

}  // namespace

const char* cpu_kernel_isa() {
  switch (kIsa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "generic";
  }
}

void decode_cpu(const DecodeParams& p, int num_threads) {
  validate(p);
  check_finite(p);
#if defined(E3DMM_HAVE_X86_KERNELS)
  if (kIsa == Isa::Avx512) return isa_avx512::decode(p, num_threads);
  if (kIsa == Isa::Avx2) return isa_avx2::decode(p, num_threads);
#endif
  isa_generic::decode(p, num_threads);
}

void decode_cuda_body_on_host(const DecodeParams& p) {
  validate(p);
  check_finite(p);
  body::with_tile(p.batch, [&](auto tile) {  // the tile the GPU launch picks for this batch
    constexpr int kT = decltype(tile)::value;
    for (int64_t b0 = 0; b0 < p.batch; b0 += kT) {
      const int nb = (int)std::min<int64_t>(kT, p.batch - b0);
      const float* coef = p.coeffs + b0 * p.coeff_stride;
      for (int64_t v = 0; v < p.num_vertices; ++v) {
        if (p.basis_type == BasisType::Float16)
          body::decode_vertex<kT, uint16_t>(p, coef, p.coeff_stride, p.shape_offset, p.tex_offset, b0, nb, v);
        else
          body::decode_vertex<kT, float>(p, coef, p.coeff_stride, p.shape_offset, p.tex_offset, b0, nb, v);
      }
    }
  });
}

}  // namespace e3dmm
