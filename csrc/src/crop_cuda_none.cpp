// Built instead of crop_cuda.cu when the library is configured without CUDA.
#include "e3dmm/crop.h"
#include "e3dmm/errors.h"

namespace e3dmm {

void crop_cuda(const CropParams& p, void*) {
  validate(p);  // argument errors are reported the same on every build
  throw Unavailable(crop_function(p, "crop_cuda") +
                    ": this build has no CUDA kernel; rebuild with nvcc on PATH (ENGINE_WITH_CUDA=ON pip install -e .)");
}

}  // namespace e3dmm
