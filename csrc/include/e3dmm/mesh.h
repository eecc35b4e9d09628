/// @file mesh.h
/// @brief Writing decoded meshes as PLY and OBJ files.
///
/// The PLY bytes are identical to those of the Python writer `engine.mesh_io`
/// for the same records, faces and comments (binary and ASCII). Every file is written
/// atomically: to a temporary name in the same folder, renamed into place only when
/// complete, so a failure never leaves a partial file under the final name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace e3dmm {

/// PLY body encoding.
enum class PlyFormat : int {
  BinaryLittleEndian = 0,  ///< `format binary_little_endian 1.0`
  Ascii = 1,               ///< `format ascii 1.0`
};

/// The complete PLY file for one mesh, in memory.
/// @param records   [num_vertices, kRecordBytes] interleaved vertex records (decode output)
/// @param faces     [num_faces, 3] 0-based vertex indices
/// @param comments  header comment lines, without the `comment ` prefix: single-line ASCII
/// ASCII bodies print x y z as `%.9g` (exact for float32) and colours as integers, as printf
/// does in the "C" locale, whatever the process locale is (setlocale(LC_ALL, "") included).
/// @throws InvalidInput (before any byte is produced) on num_vertices outside [1, 2^31 - 1],
///         num_faces outside [0, 2^31 - 1], null pointers,
///         a non-finite coordinate, a comment that is not single-line ASCII, or a face
///         index outside [0, num_vertices).
std::string ply_bytes(const uint8_t* records, int64_t num_vertices, const int32_t* faces, int64_t num_faces,
                      PlyFormat format = PlyFormat::BinaryLittleEndian,
                      const std::vector<std::string>& comments = {});

/// Writes ply_bytes() to `path` atomically.
/// @throws InvalidInput if the folder does not exist or is not writable, or `path` is a folder;
///         BackendError if writing fails part way (disk full); nothing is left behind either way.
void write_ply(const std::string& path, const uint8_t* records, int64_t num_vertices, const int32_t* faces,
               int64_t num_faces, PlyFormat format = PlyFormat::BinaryLittleEndian,
               const std::vector<std::string>& comments = {});

/// Writes a Wavefront OBJ: `# comment` lines, `v x y z r g b` per vertex (x y z as `%.9g`,
/// colours in 0..1 as `%.6f`, the extension MeshLab, trimesh and Open3D read) and 1-based
/// `f a b c` triangles, atomically; byte-identical to engine.mesh_io.write_obj.
/// @param records  [num_vertices, kRecordBytes] interleaved vertex records (decode output)
/// @param faces    [num_faces, 3] 0-based vertex indices
/// @throws the same as write_ply().
void write_obj(const std::string& path, const uint8_t* records, int64_t num_vertices, const int32_t* faces,
               int64_t num_faces, const std::vector<std::string>& comments = {});

}  // namespace e3dmm
