// build_info_json(): what this library was compiled with, for `engine info` and bug reports.
#include <sstream>
#include <string>

#include "e3dmm/decode.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace e3dmm {

std::string build_info_json() {
  std::ostringstream os;
  os << "{";
#if defined(__clang__)
  os << "\"compiler\": \"clang " << __clang_major__ << "." << __clang_minor__ << "\"";
#elif defined(__GNUC__)
  os << "\"compiler\": \"gcc " << __GNUC__ << "." << __GNUC_MINOR__ << "\"";
#elif defined(_MSC_VER)
  os << "\"compiler\": \"msvc " << _MSC_VER << "\"";
#else
  os << "\"compiler\": \"unknown\"";
#endif
  os << ", \"build_type\": \"" << E3DMM_BUILD_TYPE << "\"";
  os << ", \"cpu_kernels\": \"" << E3DMM_CPU_KERNELS << "\"";
  os << ", \"cpu_kernel_selected\": \"" << cpu_kernel_isa() << "\"";
#if defined(_OPENMP)
  os << ", \"openmp\": " << _OPENMP << ", \"openmp_max_threads\": " << omp_get_max_threads();
#else
  os << ", \"openmp\": null";
#endif
#if defined(E3DMM_WITH_CUDA)
  os << ", \"cuda\": true, \"cuda_version\": \"" << E3DMM_CUDA_VERSION << "\", \"cuda_architectures\": \""
     << E3DMM_CUDA_ARCHITECTURES << "\"";
#else
  os << ", \"cuda\": false, \"cuda_version\": null, \"cuda_architectures\": null";
#endif
#if defined(E3DMM_WITH_TENSORRT)
  os << ", \"tensorrt\": true";
#else
  os << ", \"tensorrt\": false";
#endif
  os << "}";
  return os.str();
}

}  // namespace e3dmm
