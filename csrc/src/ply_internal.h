// Internal to the library: the PLY writer split so that a caller with a fixed topology
// (Decoder: the model's faces never change) builds the binary face block once and each
// write costs only the header, the caller's records and the prebuilt block.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace e3dmm {
namespace ply_internal {

/// The binary face block (per face: byte 3, three little-endian int32); checks indices.
std::vector<uint8_t> binary_face_block(const char* who, const int32_t* faces, int64_t num_faces, int64_t num_vertices);

/// write_ply (binary little-endian) with a block from binary_face_block(); same checks on
/// records and comments, same bytes, same atomic write.
void write_binary_prebuilt(const char* who, const std::string& path, const uint8_t* records, int64_t num_vertices,
                           const std::vector<uint8_t>& face_block, const std::vector<std::string>& comments);

}  // namespace ply_internal
}  // namespace e3dmm
