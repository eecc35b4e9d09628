/// @file decoder.h
/// @brief Convenience decoders that own a MorphableModel: CPU (host memory) and CUDA
/// (bases uploaded once, device pointers, a cudaStream_t).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "e3dmm/decode.h"
#include "e3dmm/mesh.h"
#include "e3dmm/model.h"

namespace e3dmm {

/// Decodes coefficient rows on the CPU with a model it owns.
/// decode() is const and may be called from several threads at once.
class Decoder {
 public:
  /// Takes ownership of `model`.
  /// @param basis        Float16 decodes from a float16 copy of the bases (half the memory traffic,
  ///                     each element rounded to 2^-11 relative); Float32 reads the mapped file directly.
  /// @param num_threads  CPU threads per decode call (0: all available).
  explicit Decoder(MorphableModel model, BasisType basis = BasisType::Float32, int num_threads = 0);
  /// Loads the cache at `path` (see MorphableModel::load) and builds a Decoder.
  static Decoder load(const std::string& path, BasisType basis = BasisType::Float32, int num_threads = 0);

  Decoder(Decoder&&) noexcept;             ///< Moves the model.
  Decoder& operator=(Decoder&&) noexcept;  ///< Moves the model.
  ~Decoder();  ///< Releases the model (unmaps the file).

  const MorphableModel& model() const;  ///< The owned model.

  /// Decodes `batch` rows at `coeffs` (host) laid out as `layout`.
  /// Outputs (host, any may be null, at least one not): vertices [batch, N, 3] float32,
  /// colors [batch, N, 3] uint8, records [batch, N, kRecordBytes].
  /// `expression` (host, optional): [batch, Ke] expression weights; the shape then gains the
  /// model's expression term (decode.h). InvalidInput when the model has no expression basis.
  /// @throws InvalidInput on a bad layout, null outputs or a non-finite coefficient (nothing written).
  void decode(const float* coeffs, int64_t batch, const CoeffLayout& layout, float* vertices, uint8_t* colors,
              uint8_t* records, const float* expression = nullptr) const;
  /// decode() with the model's default layout (stride Ks + Kt, alpha at 0, beta at Ks).
  void decode(const float* coeffs, int64_t batch, float* vertices, uint8_t* colors, uint8_t* records,
              const float* expression = nullptr) const;

  /// Writes one decoded mesh (`records`: [N, kRecordBytes], host) with the model's faces as a
  /// PLY file, atomically; the same bytes as e3dmm::write_ply(). The binary face block is
  /// built once at construction, so a write costs little more than the bytes themselves.
  /// @throws like e3dmm::write_ply().
  void write_ply(const std::string& path, const uint8_t* records, PlyFormat format = PlyFormat::BinaryLittleEndian,
                 const std::vector<std::string>& comments = {}) const;

  /// Decodes one row (default layout) and writes it as a PLY file (atomically).
  /// Returns nothing on success; throws like decode() and write_ply().
  void decode_to_ply(const float* coeffs_row, const std::string& path,
                     PlyFormat format = PlyFormat::BinaryLittleEndian,
                     const std::vector<std::string>& comments = {}) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Decodes on the GPU: the model's means and bases are uploaded once at construction
/// and stay on the device; decode() takes device pointers and a stream, so a network's
/// output buffer (e.g. TensorRTRunner::run) feeds it without a host round trip.
/// Not thread-safe: use one CudaDecoder per host thread or serialise calls.
class CudaDecoder {
 public:
  /// Uploads the model to the current device: its float32 bases, or for BasisType::Float16 the
  /// copy made by model.make_float16_bases() (InvalidInput if not made). `model` may be dropped afterwards.
  /// @throws Unavailable without CUDA in this build or without a device; BackendError on CUDA errors.
  explicit CudaDecoder(const MorphableModel& model, BasisType basis = BasisType::Float32);
  CudaDecoder(CudaDecoder&&) noexcept;             ///< Moves the device buffers.
  CudaDecoder& operator=(CudaDecoder&&) noexcept;  ///< Moves the device buffers.
  CudaDecoder(const CudaDecoder&) = delete;             ///< Not copyable: owns device memory.
  CudaDecoder& operator=(const CudaDecoder&) = delete;  ///< Not copyable.
  ~CudaDecoder();  ///< Frees the device buffers (synchronises the device first).

  int64_t num_vertices() const;  ///< N
  CoeffLayout default_layout() const;  ///< stride Ks + Kt, alpha at 0, beta at Ks

  /// Enqueues one decode of `batch` rows at device pointer `coeffs` on `stream`
  /// (a cudaStream_t; null for the legacy default stream). Outputs are device pointers
  /// (any may be null, at least one not), shaped as in Decoder::decode(); `expression` too
  /// (device, [batch, Ke], optional). Asynchronous.
  /// Non-finite coefficients are flagged on the device: see synchronize().
  void decode(const float* coeffs, int64_t batch, const CoeffLayout& layout, float* vertices, uint8_t* colors,
              uint8_t* records, void* stream, const float* expression = nullptr);

  /// Waits for `stream`, then throws InvalidInput if any decode enqueued since the last
  /// synchronize() read a NaN or Inf coefficient (its outputs are then meaningless).
  void synchronize(void* stream);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace e3dmm
