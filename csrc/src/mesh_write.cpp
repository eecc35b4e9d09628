// PLY and OBJ writers. The PLY header and body must stay byte-identical to
// engine/mesh_io.py (checked by tests/test_cpp_example.py); change both together.
//
// Numbers are formatted with std::to_chars, never printf or streams: those follow the
// process locale, and an application that calls setlocale(LC_ALL, "") (every Qt program
// does) under de_DE would get "-26,40802", which no PLY or OBJ reader accepts. to_chars
// with a precision is specified as printf's %g / %f in the "C" locale, which is what
// Python's "%.9g" / "%.6f" print (tests/cpp/test_locale.cpp checks both).
#include <charconv>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "atomic_file.h"
#include "ply_internal.h"
#include "e3dmm/decode.h"
#include "e3dmm/errors.h"
#include "e3dmm/limits.h"
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
  // Vertex indices are int32 in the file, so N fits one; the bounds also keep every size
  // product below (n * 72, f * 24, f * 13) far from overflowing.
  if (n < 1 || n > INT32_MAX)
    throw InvalidInput(w + ": num_vertices: expected 1 to 2147483647 vertices, found " + std::to_string(n));
  if (f < 0 || f > INT32_MAX) throw InvalidInput(w + ": num_faces: expected 0 to 2147483647, found " + std::to_string(f));
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

// Locale-independent number formatting into a line buffer (see the note at the top).
struct Line {
  char buf[200];
  char* p = buf;
  void text(const char* s) {
    const size_t n = std::strlen(s);
    std::memcpy(p, s, n);
    p += n;
  }
  void chr(char c) { *p++ = c; }
  // Python's "%.9g" of the float (widened to double, exactly): round-trips every float32.
  void g9(float v) { p = std::to_chars(p, buf + sizeof buf, (double)v, std::chars_format::general, 9).ptr; }
  // Python's "%.6f".
  void f6(double v) { p = std::to_chars(p, buf + sizeof buf, v, std::chars_format::fixed, 6).ptr; }
  void integer(long long v) { p = std::to_chars(p, buf + sizeof buf, v).ptr; }
  void flush_to(std::string* s) {
    s->append(buf, (size_t)(p - buf));
    p = buf;
  }
};

std::string ascii_body(const char* who, const uint8_t* records, int64_t n, const int32_t* faces, int64_t f) {
  std::string s;
  s.reserve((size_t)(n * 48 + f * 24));
  Line line;
  for (int64_t v = 0; v < n; ++v) {
    const uint8_t* r = records + v * kRecordBytes;
    float xyz[3];
    std::memcpy(xyz, r, 12);
    for (int c = 0; c < 3; ++c) {
      line.g9(xyz[c]);
      line.chr(' ');
    }
    for (int c = 0; c < 3; ++c) {
      line.integer(r[12 + c]);
      line.chr(c < 2 ? ' ' : '\n');
    }
    line.flush_to(&s);
  }
  for (int64_t t = 0; t < f; ++t) {
    const int32_t* tri = faces + 3 * t;
    for (int c = 0; c < 3; ++c) check_face(who, 3 * t + c, tri[c], n);
    line.text("3");
    for (int c = 0; c < 3; ++c) {
      line.chr(' ');
      line.integer(tri[c]);
    }
    line.chr('\n');
    line.flush_to(&s);
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
  Line line;
  for (int64_t v = 0; v < n; ++v) {
    const uint8_t* r = records + v * kRecordBytes;
    float xyz[3];
    std::memcpy(xyz, r, 12);
    line.text("v ");
    for (int c = 0; c < 3; ++c) {
      line.g9(xyz[c]);
      line.chr(' ');
    }
    for (int c = 0; c < 3; ++c) {
      line.f6(r[12 + c] / 255.0);
      line.chr(c < 2 ? ' ' : '\n');
    }
    line.flush_to(&s);
  }
  for (int64_t t = 0; t < f; ++t) {
    const int32_t* tri = faces + 3 * t;
    for (int c = 0; c < 3; ++c) check_face("write_obj", 3 * t + c, tri[c], n);
    line.text("f");
    for (int c = 0; c < 3; ++c) {
      line.chr(' ');
      line.integer((long long)tri[c] + 1);
    }
    line.chr('\n');
    line.flush_to(&s);
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
