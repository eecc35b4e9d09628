// build_info_json(): what this library was compiled with, for `engine info` and bug reports.
//
// No iostreams here (nor anywhere in the library): a stream formats integers through the
// locale's num_put facet, and in a process where PyTorch was imported first that call
// crashed (SIGSEGV in ostream::_M_insert<long>, seen on an H200 machine with torch 2.11,
// bench/results/gpu_check.md). std::to_string on integers never touches a locale.
#include <string>

#include "e3dmm/decode.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace e3dmm {

namespace {
std::string quoted(const std::string& s) { return "\"" + s + "\""; }
}  // namespace

std::string build_info_json() {
  std::string s = "{";
#if defined(__clang__)
  s += "\"compiler\": " + quoted("clang " + std::to_string(__clang_major__) + "." + std::to_string(__clang_minor__));
#elif defined(__GNUC__)
  s += "\"compiler\": " + quoted("gcc " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__));
#elif defined(_MSC_VER)
  s += "\"compiler\": " + quoted("msvc " + std::to_string(_MSC_VER));
#else
  s += "\"compiler\": \"unknown\"";
#endif
  s += ", \"build_type\": " + quoted(E3DMM_BUILD_TYPE);
  s += ", \"cpu_kernels\": " + quoted(E3DMM_CPU_KERNELS);
  s += ", \"cpu_kernel_selected\": " + quoted(cpu_kernel_isa());
#if defined(_OPENMP)
  s += ", \"openmp\": " + std::to_string(_OPENMP) + ", \"openmp_max_threads\": " + std::to_string(omp_get_max_threads());
#else
  s += ", \"openmp\": null";
#endif
#if defined(E3DMM_WITH_CUDA)
  s += ", \"cuda\": true, \"cuda_version\": " + quoted(E3DMM_CUDA_VERSION) +
       ", \"cuda_architectures\": " + quoted(E3DMM_CUDA_ARCHITECTURES);
#else
  s += ", \"cuda\": false, \"cuda_version\": null, \"cuda_architectures\": null";
#endif
#if defined(E3DMM_WITH_TENSORRT)
  s += ", \"tensorrt\": true";
#else
  s += ", \"tensorrt\": false";
#endif
  s += "}";
  return s;
}

}  // namespace e3dmm
