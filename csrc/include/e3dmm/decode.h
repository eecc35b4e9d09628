/// @file decode.h
/// @brief Decoding 3DMM coefficients into vertices, colours and PLY vertex records.
///
/// Math (Tran et al. 2017, Basel Face Model conventions):
///   S = shape_mean + shape_basis^T * alpha          (millimetres)
///       [+ expr_mean + expr_basis^T * e]            (optional: the expression term)
///   T = clamp(tex_mean + tex_basis^T * beta, 0, 255) truncated to uint8
/// The bases already have the standard deviations folded in (row k = PC[:, k] * EV[k]),
/// so alpha and beta are the network's outputs in units of standard deviations, and e the
/// expression weights of the pose fit (the release's 29 of 3DDFA's basis), likewise.
/// Summation order per output value (the reference and every kernel): the means first
/// (shape_mean + expr_mean, one float addition), then alpha's terms in k order, then e's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace e3dmm {

/// Storage type of the two bases. Accumulation is always float32.
enum class BasisType : int {
  Float32 = 1,  ///< IEEE binary32
  Float16 = 2,  ///< IEEE binary16, passed as raw uint16_t bit patterns
};

/// Bytes of one interleaved vertex record: float32 x, y, z then uint8 r, g, b.
/// A run of records is byte-for-byte the vertex block of a binary little-endian PLY
/// with properties `float x, float y, float z, uchar red, uchar green, uchar blue`.
constexpr int kRecordBytes = 15;

/// Everything one decode call reads and writes. Plain pointers: host memory for
/// decode_cpu(), device memory for decode_cuda(). All arrays C-contiguous.
struct DecodeParams {
  const void* shape_basis = nullptr;  ///< [shape_components, 3N], K-major, sigma folded, of basis_type
  const float* shape_mean = nullptr;  ///< [3N] mean shape, x y z per vertex
  const void* tex_basis = nullptr;    ///< [tex_components, 3N], K-major, sigma folded, of basis_type
  const float* tex_mean = nullptr;    ///< [3N] mean colour, r g b per vertex, 0..255
  BasisType basis_type = BasisType::Float32;  ///< storage type of both bases
  int64_t num_vertices = 0;           ///< N
  int shape_components = 0;           ///< Ks (99 for the release)
  int tex_components = 0;             ///< Kt (99 for the release)

  const float* coeffs = nullptr;      ///< [batch, coeff_stride] network output rows
  int64_t batch = 0;                  ///< B >= 1
  int coeff_stride = 0;               ///< floats from one coefficient row to the next (198 for the release)
  int shape_offset = 0;               ///< column of alpha_0 within a row (0 for the release)
  int tex_offset = 0;                 ///< column of beta_0 within a row (99 for the release)

  /// Optional expression term, added to the shape when expr_coeffs is not null.
  const void* expr_basis = nullptr;   ///< [expr_components, 3N], K-major, sigma folded, of basis_type
  const float* expr_mean = nullptr;   ///< [3N] expression mean (the release adds it with the basis)
  int expr_components = 0;            ///< Ke (29 for the release's basis); 0: the model has none
  const float* expr_coeffs = nullptr; ///< [batch, expr_components] expression weights, or null: no term

  float* vertices = nullptr;          ///< out [batch, N, 3] float32, or null to skip
  uint8_t* colors = nullptr;          ///< out [batch, N, 3] uint8, or null to skip
  uint8_t* records = nullptr;         ///< out [batch, N, kRecordBytes] PLY vertex records, or null to skip
};

/// Checks sizes against limits.h (N <= kMaxVertices, Ks, Kt and Ke <= kMaxComponents, batch <=
/// kMaxBatch, coeff_stride <= kMaxCoeffStride), offsets (each offset + components <= stride,
/// summed in 64 bits), pointers (expr_basis and expr_mean, with Ke >= 1, when expr_coeffs is
/// set), and that at least one output is requested.
/// Throws InvalidInput naming the field, the expected and the found value.
void validate(const DecodeParams& p);

/// Decodes on the CPU with up to `num_threads` threads (0: all available).
/// Non-finite coefficients (expression weights included) are rejected before any output is
/// written (InvalidInput naming the row and column). Streams each basis from memory once per call.
void decode_cpu(const DecodeParams& p, int num_threads = 0);

/// Decodes on the GPU: one kernel launch on `stream` (a cudaStream_t, 0 for the
/// legacy default stream); asynchronous, returns before the kernel ends.
/// If `nonfinite_flag` (device int) is not null, the kernel sets it to 1 when any
/// coefficient (or expression weight) it read is NaN or Inf; the caller reads it after synchronising.
/// Throws Unavailable when the library was built without CUDA.
void decode_cuda(const DecodeParams& p, void* stream, int* nonfinite_flag);

/// Runs the CUDA kernel's per-thread body on the CPU over the whole index space
/// (host memory). Used by tests to check the GPU indexing without a GPU.
void decode_cuda_body_on_host(const DecodeParams& p);

/// True when this library was compiled with the CUDA kernel.
bool cuda_compiled();

/// Number of usable CUDA devices (0 without CUDA, a driver or a GPU). Never throws.
int cuda_device_count();

/// One-line JSON object describing the build: compiler, flags, SIMD targets,
/// OpenMP, CUDA version and architectures.
std::string build_info_json();

/// Name of the CPU code path decode_cpu() picks on this machine ("avx512", "avx2", "generic").
const char* cpu_kernel_isa();

}  // namespace e3dmm
