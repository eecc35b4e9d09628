// Built instead of decode_cuda.cu when the library is configured without CUDA.
#include "e3dmm/decode.h"
#include "e3dmm/errors.h"

namespace e3dmm {

bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }

void decode_cuda(const DecodeParams&, void*, int*) {
  throw Unavailable(
      "decode_cuda: this build has no CUDA kernel; rebuild with nvcc on PATH "
      "(ENGINE_WITH_CUDA=ON pip install -e .)");
}

}  // namespace e3dmm
