/// @file crop.h
/// @brief The release's face crop as a kernel: integer crop bounds -> [B, 3, size, size] network input.
///
/// What one call computes for face b (the rule of engine/crop.py, which is the oracle):
///  - the crop is columns [left, right) and rows [top, bottom) of face b's RGB uint8 image;
///    the bounds may leave the image (pixels there are zero: the release's zero padding);
///  - it is resized to size x size with bilinear interpolation and OpenCV's half-pixel centres:
///    output pixel j samples the crop at src = (j + 0.5) * n / size - 0.5 (n = right - left or
///    bottom - top), clamped to [0, n - 1] (edge replication of the zero-padded crop);
///  - each value is rounded to the nearest integer (halves to even) and clamped to [0, 255],
///    as the uint8 resize the release fed the network, and stored as float32 (or float16 on the
///    GPU: every integer 0..255 is exact in both) in planar BGR order: out[b][0] is blue.
/// The arithmetic is that of engine.crop._sample_bilinear step for step (tap positions and
/// weights in float64, products and sums in float32, no fused multiply-add), so the two agree
/// bit for bit; engine.crop.crop_face (OpenCV's 11-bit fixed-point weights) within 1 grey level.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace e3dmm {

/// |left|, |top|, |right|, |bottom| <= 2^33. engine.crop's box rule admits coordinates up to
/// 2^31 and widens a box by at most 2.26 half-sides on each side, so its bounds stay within
/// 3.3 x 2^31; within 2^33 every tap position and crop length is an exact float64 integer.
constexpr int64_t kMaxCropBound = int64_t(1) << 33;
/// Image height and width <= 2^31 - 1 pixels (no photo comes near; keeps indices in int64).
constexpr int64_t kMaxCropImageSide = (int64_t(1) << 31) - 1;
/// Output side <= 4096 (the network takes 224).
constexpr int kMaxCropSize = 4096;
/// Faces per call <= 65,535 (the CUDA grid's y dimension); 0 is allowed and does nothing.
constexpr int64_t kMaxCropBatch = 65535;

/// One face: where its image is and which part of it to crop. Strides are in elements
/// (bytes: the image is uint8) and may be negative (a flipped numpy view), so HWC (numpy,
/// OpenCV) and CHW (torchvision, nvJPEG) images both work without a copy.
struct CropFace {
  const uint8_t* image = nullptr;  ///< the RGB image: host memory for crop_cpu(), device memory for crop_cuda()
  int64_t height = 0;              ///< H in [1, kMaxCropImageSide]
  int64_t width = 0;               ///< W in [1, kMaxCropImageSide]
  int64_t stride_y = 0;            ///< elements from row y to row y + 1 (HWC: 3W; CHW: W)
  int64_t stride_x = 0;            ///< elements from column x to x + 1 (HWC: 3; CHW: 1)
  int64_t stride_c = 0;            ///< elements from channel c to c + 1, R -> G -> B (HWC: 1; CHW: H*W)
  int64_t left = 0;                ///< bl: first column of the crop (may be < 0: zero padding)
  int64_t top = 0;                 ///< bt: first row of the crop (may be < 0)
  int64_t right = 0;               ///< br: one past the last column (> left; may exceed W)
  int64_t bottom = 0;              ///< bb: one past the last row (> top; may exceed H)
};

/// Element type of the output buffer.
enum class CropOutType : int {
  Float32 = 1,  ///< IEEE binary32
  Float16 = 2,  ///< IEEE binary16 (crop_cuda only)
};

/// The arguments of a crop call, as its messages name them (CropNaming).
enum class CropArg {
  Batch, Size, OutType, Faces, Out,                   // the call's
  Image, Height, Width, StrideY, StrideX, StrideC,    // face b's image
  Strides,                                            // face b's three strides together (their extent)
  Left, Top, Right, Bottom,                           // face b's bounds
};

/// How a call's messages name it and its arguments. Every message of validate(), crop_cpu() and
/// crop_cuda() starts with "<function>: "; an InvalidInput goes on "<argument>: expected <what>,
/// found <value>". The defaults name CropParams' fields ("crop: faces[3].right (br): ...";
/// "crop_cuda: ..." for what only crop_cuda checks); a binding passes its own, so that its
/// caller reads the names of what it passed ("crop_batch_cpu: bounds[3][2] (br): ...").
struct CropNaming {
  std::string function;                                       ///< the message's first word
  std::function<std::string(CropArg arg, int64_t face)> name;  ///< an argument's name (face: -1 for the call's)
};

/// Everything one crop call reads and writes.
struct CropParams {
  const CropFace* faces = nullptr;  ///< [batch] faces, in HOST memory for both crop_cpu() and crop_cuda()
  int64_t batch = 0;                ///< B in [0, kMaxCropBatch] (0: nothing to do; faces and out may be null)
  int size = 224;                   ///< output side in [1, kMaxCropSize]
  void* out = nullptr;              ///< out [B, 3, size, size] C-contiguous, planar BGR 0..255, of out_type
  CropOutType out_type = CropOutType::Float32;  ///< float32 (CPU and GPU) or float16 (GPU)
  const CropNaming* naming = nullptr;           ///< how messages name things (null: the field names)
};

/// The name of `arg` (of face `face`; -1 for the call's own) in p's messages: p.naming's, else
/// CropParams' field name ("faces[3].right (br)").
std::string crop_arg_name(const CropParams& p, CropArg arg, int64_t face = -1);
/// The first word of p's messages: p.naming's function, else `fallback`.
std::string crop_function(const CropParams& p, const char* fallback);

/// Checks every field (sizes, strides, bounds within kMaxCropBound and right > left, bottom >
/// top, non-null pointers, the extent of each image's strides within int64) and throws
/// InvalidInput naming the face, the field, the expected and the found value.
void validate(const CropParams& p);

/// Crops on the CPU with up to `num_threads` threads (0: all available); out_type must be Float32.
void crop_cpu(const CropParams& p, int num_threads = 0);

/// Crops on the GPU: one kernel launch for the whole batch on `stream` (a cudaStream_t, 0 for the
/// legacy default stream), asynchronous. Image pointers and `out` are device memory on the current
/// device; `faces` is host memory (copied to a stream-ordered device array). Checks the arguments
/// first (InvalidInput, on every build), then throws Unavailable when the library was built without
/// CUDA or no device is present; InvalidInput when an image or `out` is not device memory;
/// BackendError when CUDA fails. Not capturable into a CUDA graph (the parameters are copied from
/// pageable host memory, which stream capture does not allow).
void crop_cuda(const CropParams& p, void* stream);

/// The value of one output element, (face b, BGR channel c, row oy, column ox), computed by the
/// per-element body both kernels run. Host memory; no argument checks beyond validate(p) by the caller.
float crop_value(const CropParams& p, int64_t b, int c, int oy, int ox);

}  // namespace e3dmm
