/// @file limits.h
/// @brief Bounds on model and batch sizes that the whole library holds to.
///
/// What a face model can be: the Basel Face Model 2009 has 53,490 vertices, 106,466 triangles
/// and 199 components per basis; the 3DMM-CNN release's trimmed model 46,990, 93,323 and
/// 99 + 99. The model bounds are the same numbers as engine/morphable/model.py's MAX_VERTICES,
/// MAX_FACES and MAX_COMPONENTS (one rule for every loader; tests/morphable/test_cache_differential.py
/// checks they agree, through engine._C.LIMITS). They are the cache format's bounds
/// (docs/model_cache_format.md) and decode()'s argument checks, and they make every size,
/// offset and index product in the library fit its type: 3N and K fit an int, and products
/// like batch * N * 15 or K * 3N * 4 fit an int64 with room.
#pragma once

#include <cstdint>

namespace e3dmm {

constexpr int64_t kMaxVertices = 200000;             ///< N <= 200,000 (about 4x the BFM)
constexpr int kMaxComponents = 384;                  ///< Ks, Kt <= 384 each: the CUDA kernel holds a
                                                     ///< 16-row tile of Ks + Kt floats in 48 KiB of shared memory
constexpr int64_t kMaxFaces = 2 * kMaxVertices;      ///< F <= 400,000 (cache files)
constexpr int64_t kMaxLandmarks = kMaxVertices;      ///< L <= 200,000 (cache files)
constexpr int64_t kMaxBatch = (int64_t(1) << 31) - 1;  ///< coefficient rows per decode call
constexpr int kMaxCoeffStride = 1 << 24;             ///< floats per coefficient row

}  // namespace e3dmm
