/// @file tensorrt_runner.h
/// @brief Runs a serialized TensorRT engine (built by the Python side) on a CUDA stream
/// and exposes its coefficient output as a device pointer for CudaDecoder.
///
/// Compiled only when CMake finds TensorRT (ENGINE_WITH_TENSORRT=AUTO|ON); otherwise the
/// constructor throws Unavailable. Untested in the project's CI (no TensorRT, no GPU there).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace e3dmm {

/// True when this library was built with the TensorRT runner.
bool tensorrt_compiled();

/// One deserialized engine with one execution context and an output buffer it owns.
/// Expects one float32 input [B, 3, 224, 224] (B dynamic within the engine's profile)
/// and one float32 output [B, C]. Not thread-safe.
class TensorRTRunner {
 public:
  /// Reads and deserializes the engine file at `engine_path` on the current CUDA device.
  /// @throws Unavailable (no TensorRT in this build, or no CUDA device), ModelFileError
  ///         (unreadable file, not an engine for this TensorRT version/GPU, unexpected tensors),
  ///         BackendError (CUDA or TensorRT failure).
  explicit TensorRTRunner(const std::string& engine_path);
  TensorRTRunner(TensorRTRunner&&) noexcept;             ///< Moves the engine.
  TensorRTRunner& operator=(TensorRTRunner&&) noexcept;  ///< Moves the engine.
  TensorRTRunner(const TensorRTRunner&) = delete;             ///< Not copyable: owns the engine.
  TensorRTRunner& operator=(const TensorRTRunner&) = delete;  ///< Not copyable.
  ~TensorRTRunner();  ///< Frees the output buffer (after the device is idle), context, engine, runtime.

  const std::string& input_name() const;   ///< The engine's input tensor name.
  const std::string& output_name() const;  ///< The engine's output tensor name.
  int output_width() const;                ///< C, the floats per output row (198 for the release).

  /// Enqueues the engine on `stream` (a cudaStream_t) for `batch` images at device
  /// pointer `input` (float32 [batch, 3, 224, 224]). Returns the device pointer of the
  /// float32 [batch, output_width()] output, owned by the runner and valid until the next
  /// run() or destruction; ordered on `stream`, so a decode enqueued on the same stream
  /// reads it directly, without a copy.
  /// @throws InvalidInput (batch outside the engine's profile), BackendError (enqueue failed).
  const float* run(const float* input, int64_t batch, void* stream);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace e3dmm
