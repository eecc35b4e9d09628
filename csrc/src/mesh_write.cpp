// PLY and OBJ writers. The PLY header and body must stay byte-identical to
// engine/mesh_io.py (checked by tests/test_cpp_example.py); change both together.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "atomic_file.h"
#include "ply_internal.h"
#include "e3dmm/decode.h"
#include "e3dmm/errors.h"
#include "e3dmm/mesh.h"

namespace e3dmm {
namespace {

// x, y, z of every record finite: all-ones exponent bits mean Inf or NaN. Integer tests
// in one pass; the message is built only on failure.
void check_finite(const std::string& who, const uint8_t* records, int64_t n) {
  uint32_t bad = 0;
  for (int64_t v = 0; v < n; ++v) {
    uint32_t b[3];
    std::memcpy(b, records + v * kRecordBytes, 12);
    bad |= ((b[0] & 0x7f800000u) == 0x7f800000u) | ((b[1] & 0x7f800000u) == 0x7f800000u) |
           ((b[2] & 0x7f800000u) == 0x7f800000u);
  }
  if (!bad) return;
  for (int64_t v = 0; v < n; ++v) {
    float xyz[3];
    std::memcpy(xyz, records + v * kRecordBytes, 12);
    if (!std::isfinite(xyz[0]) || !std::isfinite(xyz[1]) || !std::isfinite(xyz[2]))
      throw InvalidInput(who + ": records: expected finite x y z, found NaN or Inf at vertex " + std::to_string(v));
  }
}

// The same checks, in the same order of strictness, as engine/mesh_io.py's _check().
void check_args(const char* who, const uint8_t* records, int64_t n, const int32_t* faces, int64_t f,
                const std::vector<std::string>& comments) {
  const std::string w(who);
  if (n < 1) throw InvalidInput(w + ": num_vertices: expected at least one vertex, found " + std::to_string(n));
  if (f < 0) throw InvalidInput(w + ": num_faces: expected >= 0, found " + std::to_string(f));
  if (!records) throw InvalidInput(w + ": records: expected a pointer, found null");
  if (f > 0 && !faces) throw InvalidInput(w + ": faces: expected a pointer, found null");
  check_finite(w, records, n);
  for (const std::string& c : comments)
    for (const char ch : c)
      if (ch == '\r' || ch == '\n' || (unsigned char)ch >= 0x80)
        throw InvalidInput(w + ": comments: expected single-line ASCII strings, found \"" + c + "\"");
}

// A face index outside [0, N) would produce a file no viewer can read.
void check_face(const char* who, int64_t i, int32_t v, int64_t n) {
  if (v < 0 || v >= n)
    throw InvalidInput(std::string(who) + ": faces[" + std::to_string(i / 3) + ", " + std::to_string(i % 3) +
                       "]: expected a vertex index in [0, " + std::to_string(n) + "), found " + std::to_string(v));
}

std::string ply_header(int64_t n, int64_t f, PlyFormat format, const std::vector<std::string>& comments) {
  std::string h = "ply\n";
  h += format == PlyFormat::Ascii ? "format ascii 1.0\n" : "format binary_little_endian 1.0\n";
  for (const std::string& c : comments) h += "comment " + c + "\n";
  h += "element vertex " + std::to_string(n) + "\n";
  h += "property float x\nproperty float y\nproperty float z\n";
  h += "property uchar red\nproperty uchar green\nproperty uchar blue\n";
  h += "element face " + std::to_string(f) + "\n";
  h += "property list uchar int vertex_indices\n";
  h += "end_header\n";
  return h;
}

// Binary face block: per face the count byte 3 then three little-endian int32, written
// into a per-thread buffer that is reused: a fresh 1.2 MB allocation per file (BFM size)
// costs page faults comparable to writing the file. Checks every index on the way.
const uint8_t* binary_faces(const char* who, const int32_t* faces, int64_t f, int64_t n) {
  thread_local std::unique_ptr<uint8_t[]> buf;
  thread_local size_t cap = 0;
  const size_t bytes = (size_t)f * 13;
  if (bytes > cap) {
    buf.reset(new uint8_t[bytes]);
    cap = bytes;
  }
  uint8_t* o = buf.get();
  for (int64_t t = 0; t < f; ++t, o += 13) {
    const int32_t* tri = faces + 3 * t;
    for (int c = 0; c < 3; ++c) check_face(who, 3 * t + c, tri[c], n);
    o[0] = 3;
    std::memcpy(o + 1, tri, 12);
  }
  return buf.get();
}

// "%.9g" of the float widened to double: what mesh_io.py prints, and exact for float32.
int format_float(char* buf, size_t cap, float v) { return std::snprintf(buf, cap, "%.9g", (double)v); }

std::string ascii_body(const char* who, const uint8_t* records, int64_t n, const int32_t* faces, int64_t f) {
  std::string s;
  s.reserve((size_t)(n * 48 + f * 24));
  char line[160];
  for (int64_t v = 0; v < n; ++v) {
    const uint8_t* r = records + v * kRecordBytes;
    float xyz[3];
    std::memcpy(xyz, r, 12);
    size_t len = 0;
    for (int c = 0; c < 3; ++c) {
      len += (size_t)format_float(line + len, sizeof line - len, xyz[c]);
      line[len++] = ' ';
    }
    len += (size_t)std::snprintf(line + len, sizeof line - len, "%u %u %u\n", r[12], r[13], r[14]);
    s.append(line, len);
  }
  for (int64_t t = 0; t < f; ++t) {
    const int32_t* tri = faces + 3 * t;
    for (int c = 0; c < 3; ++c) check_face(who, 3 * t + c, tri[c], n);
    const int len = std::snprintf(line, sizeof line, "3 %d %d %d\n", tri[0], tri[1], tri[2]);
    s.append(line, (size_t)len);
  }
  return s;
}

}  // namespace

std::string ply_bytes(const uint8_t* records, int64_t n, const int32_t* faces, int64_t f, PlyFormat format,
                             const std::vector<std::string>& comments) {
  check_args("ply_bytes", records, n, faces, f, comments);
  std::string out = ply_header(n, f, format, comments);
  if (format == PlyFormat::Ascii) return out + ascii_body("ply_bytes", records, n, faces, f);
  const uint8_t* fb = binary_faces("ply_bytes", faces, f, n);
  out.append(reinterpret_cast<const char*>(records), (size_t)n * kRecordBytes);
  out.append(reinterpret_cast<const char*>(fb), (size_t)f * 13);
  return out;
}

void write_ply(const std::string& path, const uint8_t* records, int64_t n, const int32_t* faces, int64_t f,
               PlyFormat format, const std::vector<std::string>& comments) {
  check_args("write_ply", records, n, faces, f, comments);
  // Everything that can fail on the input is checked before the file is created.
  const std::string header = ply_header(n, f, format, comments);
  std::string ascii;
  const uint8_t* fb = nullptr;
  if (format == PlyFormat::Ascii)
    ascii = ascii_body("write_ply", records, n, faces, f);
  else
    fb = binary_faces("write_ply", faces, f, n);
  AtomicFile file("write_ply", path);
  if (format == PlyFormat::Ascii) {
    struct iovec v[2] = {{const_cast<char*>(header.data()), header.size()}, {&ascii[0], ascii.size()}};
    file.write(v, 2);
  } else {
    // The records go straight from the caller's buffer to the kernel: no copy.
    struct iovec v[3] = {{const_cast<char*>(header.data()), header.size()},
                         {const_cast<uint8_t*>(records), (size_t)n * kRecordBytes},
                         {const_cast<uint8_t*>(fb), (size_t)f * 13}};
    file.write(v, 3);
  }
  file.commit();
}

static std::string obj_bytes(const uint8_t* records, int64_t n, const int32_t* faces, int64_t f,
                             const std::vector<std::string>& comments) {
  std::string s;
  s.reserve((size_t)(n * 72 + f * 24));
  for (const std::string& c : comments) s += "# " + c + "\n";
  char line[200];
  for (int64_t v = 0; v < n; ++v) {
    const uint8_t* r = records + v * kRecordBytes;
    float xyz[3];
    std::memcpy(xyz, r, 12);
    size_t len = 2;
    line[0] = 'v';
    line[1] = ' ';
    for (int c = 0; c < 3; ++c) {
      len += (size_t)format_float(line + len, sizeof line - len, xyz[c]);
      line[len++] = ' ';
    }
    len += (size_t)std::snprintf(line + len, sizeof line - len, "%.6f %.6f %.6f\n", r[12] / 255.0, r[13] / 255.0,
                                 r[14] / 255.0);
    s.append(line, len);
  }
  for (int64_t t = 0; t < f; ++t) {
    const int32_t* tri = faces + 3 * t;
    for (int c = 0; c < 3; ++c) check_face("write_obj", 3 * t + c, tri[c], n);
    const int len = std::snprintf(line, sizeof line, "f %lld %lld %lld\n", (long long)tri[0] + 1,
                                  (long long)tri[1] + 1, (long long)tri[2] + 1);
    s.append(line, (size_t)len);
  }
  return s;
}

void write_obj(const std::string& path, const uint8_t* records, int64_t n, const int32_t* faces, int64_t f,
               const std::vector<std::string>& comments) {
  check_args("write_obj", records, n, faces, f, comments);
  const std::string s = obj_bytes(records, n, faces, f, comments);  // encode fully before touching the disk
  AtomicFile file("write_obj", path);
  file.write(s.data(), s.size());
  file.commit();
}

namespace ply_internal {

std::vector<uint8_t> binary_face_block(const char* who, const int32_t* faces, int64_t f, int64_t n) {
  const uint8_t* fb = binary_faces(who, faces, f, n);
  return std::vector<uint8_t>(fb, fb + (size_t)f * 13);
}

void write_binary_prebuilt(const char* who, const std::string& path, const uint8_t* records, int64_t n,
                           const std::vector<uint8_t>& face_block, const std::vector<std::string>& comments) {
  const int64_t f = (int64_t)(face_block.size() / 13);
  static const int32_t kNoFaces[3] = {0, 0, 0};  // check_args wants a pointer when f > 0; never read
  check_args(who, records, n, kNoFaces, f, comments);
  const std::string header = ply_header(n, f, PlyFormat::BinaryLittleEndian, comments);
  AtomicFile file(who, path);
  struct iovec v[3] = {{const_cast<char*>(header.data()), header.size()},
                       {const_cast<uint8_t*>(records), (size_t)n * kRecordBytes},
                       {const_cast<uint8_t*>(face_block.data()), face_block.size()}};
  file.write(v, 3);
  file.commit();
}

}  // namespace ply_internal
}  // namespace e3dmm
