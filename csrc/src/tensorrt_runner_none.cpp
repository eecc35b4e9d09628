// Built instead of tensorrt_runner.cpp when CMake did not find TensorRT.
#include "e3dmm/errors.h"
#include "e3dmm/tensorrt_runner.h"

namespace e3dmm {

bool tensorrt_compiled() { return false; }

struct TensorRTRunner::Impl {};

TensorRTRunner::TensorRTRunner(const std::string&) {
  throw Unavailable(
      "TensorRTRunner: this build has no TensorRT runner; install TensorRT (headers and libnvinfer) and "
      "reconfigure with -DENGINE_WITH_TENSORRT=ON (and -DTensorRT_ROOT=<prefix> if it is not in a system path)");
}
TensorRTRunner::TensorRTRunner(TensorRTRunner&&) noexcept = default;
TensorRTRunner& TensorRTRunner::operator=(TensorRTRunner&&) noexcept = default;
TensorRTRunner::~TensorRTRunner() = default;

const std::string& TensorRTRunner::input_name() const {
  static const std::string none;
  return none;
}
const std::string& TensorRTRunner::output_name() const { return input_name(); }
int TensorRTRunner::output_width() const { return 0; }
const float* TensorRTRunner::run(const float*, int64_t, void*) {
  throw Unavailable("TensorRTRunner: this build has no TensorRT runner");
}

}  // namespace e3dmm
