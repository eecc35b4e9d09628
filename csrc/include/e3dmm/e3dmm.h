/// @file e3dmm.h
/// @brief Umbrella header of the e3dmm C++ API: include this one file.
///
/// - model.h: MorphableModel::load of the `.e3dmm` cache
/// - decode.h: DecodeParams, decode_cpu, decode_cuda (the kernels)
/// - decoder.h: Decoder (CPU) and CudaDecoder (GPU) that own a model
/// - mesh.h: write_ply, write_obj, ply_bytes
/// - raster.h: rasterize, the z-buffer rasteriser of posed meshes (pictures)
/// - crop.h: crop_cpu, crop_cuda (the release's face crop into the network's input batch)
/// - tensorrt_runner.h: TensorRTRunner (where built with TensorRT)
/// - errors.h: the typed exceptions
/// - limits.h: the bounds on model and batch sizes
#pragma once

#include "e3dmm/crop.h"
#include "e3dmm/decode.h"
#include "e3dmm/decoder.h"
#include "e3dmm/errors.h"
#include "e3dmm/limits.h"
#include "e3dmm/mesh.h"
#include "e3dmm/model.h"
#include "e3dmm/raster.h"
#include "e3dmm/tensorrt_runner.h"
