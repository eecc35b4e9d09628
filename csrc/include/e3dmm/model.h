/// @file model.h
/// @brief Loading a decode-ready morphable model from the `.e3dmm` cache file.
///
/// The cache format is specified in docs/model_cache_format.md; the Python side
/// (`engine.morphable.write_cache`) writes it. The C++ reader maps the
/// file read-only and hands out pointers into the mapping: nothing is parsed or copied.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "e3dmm/decode.h"
#include "e3dmm/limits.h"

namespace e3dmm {

/// Where alpha (shape) and beta (texture) sit inside one coefficient row.
struct CoeffLayout {
  int stride = 198;       ///< floats from one row to the next
  int shape_offset = 0;   ///< column of alpha_0
  int tex_offset = 99;    ///< column of beta_0
};

/// A morphable model loaded from a `.e3dmm` cache (version 1).
///
/// All pointers returned by the accessors point into a read-only memory mapping of the
/// file and stay valid while this object lives. Movable, not copyable. Const methods
/// may be called from several threads at once.
class MorphableModel {
 public:
  /// Maps and validates the cache at `path` by every rule of docs/model_cache_format.md (the
  /// same rules, in the same order, as the Python reader): magic, version, reserved bytes,
  /// file size, the twelve known array names (seven required; landmarks, landmarks_outer only
  /// with landmarks, and the three expression arrays together), dtype, rank and dims of each
  /// (within the bounds of limits.h), every array and the metadata inside the file, after the
  /// table, 64-byte aligned and not overlapping, consistent N, Ks, Kt, L, Ke, finite float
  /// values, every face and landmark index in [0, N), and the metadata (strict RFC 8259 JSON, no duplicate keys,
  /// depth <= 64, an object with "format": "e3dmm-cache", a boolean "synthetic" and string
  /// "name" and "source").
  /// @throws ModelFileError naming the file, the field, what was expected and what was found
  ///         (also when the file cannot be opened or mapped: missing, a folder, ENOMEM).
  static MorphableModel load(const std::string& path);

  MorphableModel(MorphableModel&&) noexcept;             ///< Moves the mapping.
  MorphableModel& operator=(MorphableModel&&) noexcept;  ///< Moves the mapping.
  MorphableModel(const MorphableModel&) = delete;             ///< Not copyable: owns the mapping.
  MorphableModel& operator=(const MorphableModel&) = delete;  ///< Not copyable.
  ~MorphableModel();  ///< Unmaps the file.

  const std::string& path() const;   ///< The file this model was loaded from.
  int64_t num_vertices() const;      ///< N
  int64_t num_faces() const;         ///< F
  int shape_components() const;      ///< Ks
  int tex_components() const;        ///< Kt

  const float* shape_mean() const;   ///< [3N] millimetres, x y z per vertex
  const float* shape_basis() const;  ///< [Ks, 3N] sigma folded in (K-major)
  const float* shape_sigma() const;  ///< [Ks] the folded standard deviations
  const float* tex_mean() const;     ///< [3N] colour 0..255, r g b per vertex
  const float* tex_basis() const;    ///< [Kt, 3N] sigma folded in (K-major)
  const float* tex_sigma() const;    ///< [Kt]
  const int32_t* faces() const;      ///< [F, 3] 0-based vertex indices
  const int32_t* landmarks() const;  ///< [L] 0-based vertex indices (the release's innerLandmarkIndex), or null
  /// [L] the jaw-contour variant (the release's outerLandmarkIndex), or null when the file has none.
  const int32_t* landmarks_outer() const;
  int64_t num_landmarks() const;     ///< L (68 for the release); 0 when the file has no landmarks
  int expression_components() const;        ///< Ke (29 for the release's 3DDFA basis); 0 without a basis
  const float* expression_mean() const;     ///< [3N] millimetres, or null without a basis
  const float* expression_basis() const;    ///< [Ke, 3N] sigma folded in (K-major), or null
  const float* expression_sigma() const;    ///< [Ke], or null

  const std::string& metadata_json() const;  ///< The metadata object, verbatim UTF-8 JSON.
  const std::string& name() const;           ///< metadata "name" ("" when absent)
  /// True for the built-in synthetic model (metadata "synthetic"): not a real face
  /// model; every tool that shows the model must say so.
  bool synthetic() const;

  /// The default layout of a network output row: alpha at 0, beta at Ks, stride Ks + Kt.
  CoeffLayout default_layout() const;

  /// Builds a float16 (round-to-nearest-even) copy of the bases (shape, texture and, when the
  /// model has one, expression), owned by this object,
  /// for decode_params(..., BasisType::Float16). Halves the bytes the decode streams.
  /// Not thread-safe with concurrent decode_params(Float16) calls. Idempotent.
  /// @throws InvalidInput (and keeps no copy) if a basis value is beyond float16's range
  ///         (|v| >= 65520 would round to Inf): such a model decodes with Float32 only.
  void make_float16_bases();
  /// True after make_float16_bases().
  bool has_float16_bases() const;

  /// Fills the model half of DecodeParams (the expression basis included, when the model has
  /// one) plus the coefficient fields for host (CPU) decoding of `batch` rows at `coeffs`. The
  /// caller sets the outputs (vertices, colors, records), and expr_coeffs to add the expression term.
  /// @throws InvalidInput if the layout does not fit the model, or Float16 is asked
  ///         for before make_float16_bases().
  DecodeParams decode_params(const float* coeffs, int64_t batch, const CoeffLayout& layout,
                             BasisType basis = BasisType::Float32) const;
  /// decode_params() with default_layout().
  DecodeParams decode_params(const float* coeffs, int64_t batch) const;

 private:
  struct Impl;
  explicit MorphableModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace e3dmm
