// Small pieces shared by the CPU kernels' argument checks and OpenMP loops (decode, raster, crop):
// one place for the "in [lo, hi]" wording of every range error and for the thread count rule.
#pragma once

#include <cstdint>
#include <string>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace e3dmm {
namespace cpu_common {

// "in [lo, hi]": the expected part of an out-of-range message (errors name field, expected, found).
inline std::string in_range(int64_t lo, int64_t hi) {
  return "in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
}

// OpenMP threads for a call: the caller's count when positive, else OpenMP's default (1 without OpenMP).
inline int thread_count(int num_threads) {
#if defined(_OPENMP)
  return num_threads > 0 ? num_threads : omp_get_max_threads();
#else
  (void)num_threads;
  return 1;
#endif
}

}  // namespace cpu_common
}  // namespace e3dmm
