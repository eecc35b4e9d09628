// A small .e3dmm writer for the tests, written from docs/model_cache_format.md alone
// (independently of the library's reader), plus helpers to corrupt a file on purpose.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace testutil {

// A random, decode-ready model. Arrays in the order of the table it writes (see kNames).
struct TinyModel {
  int64_t n = 0, f = 0;
  int ks = 0, kt = 0;
  std::vector<float> shape_mean, shape_basis, shape_sigma, tex_mean, tex_basis, tex_sigma;
  std::vector<int32_t> faces, landmarks;
  std::string metadata;
};

// Table order of write_cache(): record i holds kNames[i] (landmarks last, when present).
extern const char* const kNames[8];

TinyModel make_model(int64_t n, int64_t f, int ks, int kt, unsigned seed, bool with_landmarks = true);

// The file bytes. Metadata right after the table, arrays at 64-byte boundaries.
std::vector<uint8_t> cache_bytes(const TinyModel& m);

void write_file(const std::string& path, const std::vector<uint8_t>& bytes);
std::vector<uint8_t> read_file(const std::string& path);

// Little-endian field access in a byte buffer.
void put_u32(std::vector<uint8_t>* b, size_t at, uint32_t v);
void put_u64(std::vector<uint8_t>* b, size_t at, uint64_t v);
uint64_t get_u64(const std::vector<uint8_t>& b, size_t at);
// Byte offset of field `field_offset` of table record `i`.
inline size_t rec(int i, size_t field_offset) { return 64 + 64 * (size_t)i + field_offset; }

// A fresh empty folder under the system temp dir, removed with its files by the destructor.
struct TempDir {
  TempDir();
  ~TempDir();
  std::string path;
  std::string file(const std::string& name) const { return path + "/" + name; }
  std::vector<std::string> list() const;  // names of the entries, hidden ones included
};

}  // namespace testutil
