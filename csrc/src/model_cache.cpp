// Reader of the `.e3dmm` model cache, version 1 (docs/model_cache_format.md).
// The file is mapped read-only; every offset and size is checked against the real file
// size before a pointer into the mapping is formed, so no input can make us read outside it.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <sstream>
#include <vector>

#include "e3dmm/errors.h"
#include "e3dmm/model.h"
#include "json_lite.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the cache is little-endian; this reader maps it as is");

namespace e3dmm {
namespace {

constexpr char kMagic[8] = {'E', '3', 'D', 'M', 'M', 'B', 'I', 'N'};
constexpr uint64_t kHeaderBytes = 64;
constexpr uint64_t kEntryBytes = 64;
constexpr uint32_t kVersion = 1;
enum : uint32_t { kFloat32 = 1, kFloat16 = 2, kInt32 = 3 };

[[noreturn]] void bad(const std::string& path, const std::string& field, const std::string& expected,
                      const std::string& found) {
  throw ModelFileError(path + ": " + field + ": expected " + expected + ", found " + found);
}

template <typename T>
T read_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::string u64s(uint64_t v) { return std::to_string(v); }

// Printable rendering of raw bytes (magic, names) for messages.
std::string printable(const uint8_t* p, size_t n) {
  std::ostringstream os;
  os << '"';
  for (size_t i = 0; i < n; ++i) {
    if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\') {
      os << (char)p[i];
    } else {
      static const char* hex = "0123456789abcdef";
      os << "\\x" << hex[p[i] >> 4] << hex[p[i] & 15];
    }
  }
  os << '"';
  return os.str();
}

struct Entry {
  std::string name;
  uint32_t dtype = 0, ndim = 0;
  uint64_t dim0 = 0, dim1 = 0, offset = 0, nbytes = 0;
};

const char* dtype_name(uint32_t d) {
  switch (d) {
    case kFloat32: return "float32";
    case kFloat16: return "float16";
    case kInt32: return "int32";
    default: return "unknown";
  }
}

// Offset of the first byte that breaks UTF-8 (overlongs, surrogates and > U+10FFFF
// included), or npos. The metadata must be UTF-8 (the spec; Python's reader decodes it so).
size_t first_invalid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned c = p[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return i;
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    static const uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return i;
    i += len;
  }
  return std::string::npos;
}

// IEEE binary32 -> binary16 with round-to-nearest-even (inf/nan preserved).
uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t exp = (x >> 23) & 0xffu;
  uint32_t mant = x & 0x7fffffu;
  if (exp == 0xffu) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0u));
  const int e = (int)exp - 127 + 15;
  if (e >= 0x1f) return (uint16_t)(sign | 0x7c00u);  // overflow -> inf
  if (e <= 0) {
    if (e < -10) return (uint16_t)sign;  // underflow -> signed zero
    mant |= 0x800000u;                   // subnormal half: shift in the implicit bit
    const int shift = 14 - e;
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return (uint16_t)(sign | h);
  }
  uint32_t h = ((uint32_t)e << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent: correct
  return (uint16_t)(sign | h);
}

}  // namespace

struct MorphableModel::Impl {
  std::string path;
  void* map = nullptr;
  size_t map_bytes = 0;
  std::string metadata, name;
  bool synthetic = false;
  int64_t n = 0, f = 0, n_landmarks = 0;
  int ks = 0, kt = 0;
  const float *shape_mean = nullptr, *shape_basis = nullptr, *shape_sigma = nullptr;
  const float *tex_mean = nullptr, *tex_basis = nullptr, *tex_sigma = nullptr;
  const int32_t *faces = nullptr, *landmarks = nullptr;
  std::vector<uint16_t> shape_basis_f16, tex_basis_f16;

  ~Impl() {
    if (map) munmap(map, map_bytes);
  }
};

MorphableModel::MorphableModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MorphableModel::MorphableModel(MorphableModel&&) noexcept = default;
MorphableModel& MorphableModel::operator=(MorphableModel&&) noexcept = default;
MorphableModel::~MorphableModel() = default;

MorphableModel MorphableModel::load(const std::string& path) {
  auto m = std::make_unique<Impl>();
  m->path = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) bad(path, "file", "a readable .e3dmm model cache", std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    bad(path, "file", "a regular file", "a directory or special file");
  }
  const uint64_t size = (uint64_t)st.st_size;
  if (size < sizeof kMagic) {
    ::close(fd);
    bad(path, "magic", "the bytes \"E3DMMBIN\" (an .e3dmm model cache)", "a file of " + u64s(size) + " bytes");
  }
  m->map = mmap(nullptr, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file alive
  if (m->map == MAP_FAILED) {
    m->map = nullptr;
    bad(path, "file", "a file that can be memory-mapped", std::strerror(errno));
  }
  m->map_bytes = (size_t)size;
  const uint8_t* base = static_cast<const uint8_t*>(m->map);

  // ---- header ----
  if (std::memcmp(base, kMagic, sizeof kMagic) != 0)
    bad(path, "magic", "the bytes \"E3DMMBIN\" (an .e3dmm model cache)", printable(base, sizeof kMagic));
  if (size < kHeaderBytes) bad(path, "header", "64 bytes (file truncated?)", "a file of " + u64s(size) + " bytes");
  const uint32_t version = read_le<uint32_t>(base + 8);
  if (version != kVersion) bad(path, "version", "1", u64s(version));
  const uint32_t count = read_le<uint32_t>(base + 12);
  const uint64_t meta_off = read_le<uint64_t>(base + 16), meta_n = read_le<uint64_t>(base + 24);
  const uint64_t file_n = read_le<uint64_t>(base + 32);
  if (file_n != size) bad(path, "file_nbytes", u64s(file_n) + " bytes in the file (truncated or padded?)", u64s(size));
  const uint64_t table_end = kHeaderBytes + kEntryBytes * (uint64_t)count;  // count < 2^32: no overflow
  if (table_end > size)
    bad(path, "array_count", "a table that fits the file of " + u64s(size) + " bytes", u64s(count) + " records");
  if (meta_off < table_end || meta_off > size || meta_n > size - meta_off)
    bad(path, "metadata_offset/metadata_nbytes",
        "a range after the array table (>= " + u64s(table_end) + ") inside the file of " + u64s(size) + " bytes",
        "offset " + u64s(meta_off) + ", " + u64s(meta_n) + " bytes");

  // ---- array table ----
  std::map<std::string, Entry> arrays;
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* r = base + kHeaderBytes + kEntryBytes * i;
    const std::string where = "array table record " + std::to_string(i);
    size_t len = 0;
    while (len < 24 && r[len] != 0) ++len;
    for (size_t j = 0; j < 24; ++j) {
      const bool name_char = j < len && r[j] >= 0x21 && r[j] < 0x7f;
      if (j < len ? !name_char : r[j] != 0)
        bad(path, where + " name", "printable ASCII, NUL-padded to 24 bytes", printable(r, 24));
    }
    if (len == 0) bad(path, where + " name", "a non-empty name", "an empty name");
    Entry e;
    e.name.assign(reinterpret_cast<const char*>(r), len);
    const std::string field = "array '" + e.name + "'";
    e.dtype = read_le<uint32_t>(r + 24);
    e.ndim = read_le<uint32_t>(r + 28);
    e.dim0 = read_le<uint64_t>(r + 32);
    e.dim1 = read_le<uint64_t>(r + 40);
    e.offset = read_le<uint64_t>(r + 48);
    e.nbytes = read_le<uint64_t>(r + 56);
    if (e.dtype != kFloat32 && e.dtype != kFloat16 && e.dtype != kInt32)
      bad(path, field + " dtype", "1 (float32), 2 (float16) or 3 (int32)", u64s(e.dtype));
    if (e.ndim != 1 && e.ndim != 2) bad(path, field + " ndim", "1 or 2", u64s(e.ndim));
    if (e.ndim == 1 && e.dim1 != 1) bad(path, field + " dim1", "1 (ndim is 1)", u64s(e.dim1));
    const uint64_t item = e.dtype == kFloat16 ? 2 : 4;
    const uint64_t lim = std::numeric_limits<uint64_t>::max();
    if ((e.dim1 != 0 && e.dim0 > lim / e.dim1) || (e.dim0 * e.dim1 > lim / item) || e.dim0 * e.dim1 * item != e.nbytes)
      bad(path, field + " nbytes",
          "dim0 * dim1 * itemsize = " + u64s(e.dim0) + " * " + u64s(e.dim1) + " * " + u64s(item), u64s(e.nbytes));
    if (e.offset % 64 != 0) bad(path, field + " offset", "a multiple of 64", u64s(e.offset));
    if (e.offset < table_end || e.offset > size || e.nbytes > size - e.offset)
      bad(path, field + " offset/nbytes",
          "a range after the array table (>= " + u64s(table_end) + ") inside the file of " + u64s(size) + " bytes",
          "offset " + u64s(e.offset) + ", " + u64s(e.nbytes) + " bytes");
    if (!arrays.emplace(e.name, e).second) bad(path, field, "one record per name", "a second record");
  }

  // ---- required arrays: dtype, rank, consistent N, Ks, Kt ----
  auto need = [&](const char* name, uint32_t dtype, uint32_t ndim) -> const Entry& {
    auto it = arrays.find(name);
    if (it == arrays.end()) bad(path, std::string("array '") + name + "'", "present (required)", "missing");
    const Entry& e = it->second;
    if (e.dtype != dtype) bad(path, std::string("array '") + name + "' dtype", dtype_name(dtype), dtype_name(e.dtype));
    if (e.ndim != ndim)
      bad(path, std::string("array '") + name + "' ndim", std::to_string(ndim), u64s(e.ndim));
    return e;
  };
  auto dims = [](const Entry& e) {
    return e.ndim == 1 ? "[" + u64s(e.dim0) + "]" : "[" + u64s(e.dim0) + ", " + u64s(e.dim1) + "]";
  };
  const Entry& smean = need("shape_mean", kFloat32, 1);
  const uint64_t n3 = smean.dim0;
  if (n3 == 0 || n3 % 3 != 0 || n3 / 3 > (uint64_t)std::numeric_limits<int32_t>::max())
    bad(path, "array 'shape_mean' shape", "[3N] with 1 <= N < 2^31", dims(smean));
  const std::string s3n = u64s(n3);
  const Entry& sbasis = need("shape_basis", kFloat32, 2);
  if (sbasis.dim1 != n3 || sbasis.dim0 == 0 || sbasis.dim0 > (uint64_t)std::numeric_limits<int>::max())
    bad(path, "array 'shape_basis' shape", "[Ks, " + s3n + "] with Ks >= 1 (3N from shape_mean)", dims(sbasis));
  const Entry& ssig = need("shape_sigma", kFloat32, 1);
  if (ssig.dim0 != sbasis.dim0)
    bad(path, "array 'shape_sigma' shape", "[" + u64s(sbasis.dim0) + "] (Ks from shape_basis)", dims(ssig));
  const Entry& tmean = need("tex_mean", kFloat32, 1);
  if (tmean.dim0 != n3) bad(path, "array 'tex_mean' shape", "[" + s3n + "] (3N from shape_mean)", dims(tmean));
  const Entry& tbasis = need("tex_basis", kFloat32, 2);
  if (tbasis.dim1 != n3 || tbasis.dim0 == 0 || tbasis.dim0 > (uint64_t)std::numeric_limits<int>::max())
    bad(path, "array 'tex_basis' shape", "[Kt, " + s3n + "] with Kt >= 1 (3N from shape_mean)", dims(tbasis));
  const Entry& tsig = need("tex_sigma", kFloat32, 1);
  if (tsig.dim0 != tbasis.dim0)
    bad(path, "array 'tex_sigma' shape", "[" + u64s(tbasis.dim0) + "] (Kt from tex_basis)", dims(tsig));
  const Entry& faces = need("faces", kInt32, 2);
  if (faces.dim1 != 3) bad(path, "array 'faces' shape", "[F, 3]", dims(faces));

  m->n = (int64_t)(n3 / 3);
  m->ks = (int)sbasis.dim0;
  m->kt = (int)tbasis.dim0;
  m->f = (int64_t)faces.dim0;
  auto at = [&](const Entry& e) { return static_cast<const void*>(base + e.offset); };
  m->shape_mean = static_cast<const float*>(at(smean));
  m->shape_basis = static_cast<const float*>(at(sbasis));
  m->shape_sigma = static_cast<const float*>(at(ssig));
  m->tex_mean = static_cast<const float*>(at(tmean));
  m->tex_basis = static_cast<const float*>(at(tbasis));
  m->tex_sigma = static_cast<const float*>(at(tsig));
  m->faces = static_cast<const int32_t*>(at(faces));

  // ---- index ranges: a bad face index would make every consumer read out of bounds ----
  const int32_t nmax = (int32_t)m->n;
  for (int64_t i = 0; i < 3 * m->f; ++i) {
    const int32_t v = m->faces[i];
    if (v < 0 || v >= nmax)
      bad(path, "array 'faces'[" + std::to_string(i / 3) + ", " + std::to_string(i % 3) + "]",
          "a vertex index in [0, " + std::to_string(nmax) + ")", std::to_string(v));
  }
  auto lm = arrays.find("landmarks");
  if (lm != arrays.end()) {
    const Entry& e = lm->second;
    if (e.dtype != kInt32 || e.ndim != 1)
      bad(path, "array 'landmarks'", "int32 [68]", std::string(dtype_name(e.dtype)) + " " + dims(e));
    m->landmarks = static_cast<const int32_t*>(at(e));
    m->n_landmarks = (int64_t)e.dim0;
    for (int64_t i = 0; i < m->n_landmarks; ++i)
      if (m->landmarks[i] < 0 || m->landmarks[i] >= nmax)
        bad(path, "array 'landmarks'[" + std::to_string(i) + "]", "a vertex index in [0, " + std::to_string(nmax) + ")",
            std::to_string(m->landmarks[i]));
  }

  // ---- metadata ----
  m->metadata.assign(reinterpret_cast<const char*>(base + meta_off), (size_t)meta_n);
  const size_t bad_utf8 = first_invalid_utf8(m->metadata);
  if (bad_utf8 != std::string::npos)
    bad(path, "metadata", "UTF-8 text", "an invalid byte sequence at byte " + std::to_string(bad_utf8));
  json_lite::TopLevel top;
  std::string jerr;
  if (!json_lite::parse_object(m->metadata, &top, &jerr)) bad(path, "metadata", "a UTF-8 JSON object", jerr);
  auto fmt = top.strings.find("format");
  if (fmt == top.strings.end() || fmt->second != "e3dmm-cache")
    bad(path, "metadata \"format\"", "\"e3dmm-cache\"", fmt == top.strings.end() ? "missing or not a string" : '"' + fmt->second + '"');
  auto syn = top.bools.find("synthetic");
  if (syn == top.bools.end()) bad(path, "metadata \"synthetic\"", "true or false", "missing or not a boolean");
  m->synthetic = syn->second;
  for (const char* key : {"name", "source"})
    if (!top.kinds.count(key)) bad(path, std::string("metadata \"") + key + "\"", "this required key", "missing");
  auto nm = top.strings.find("name");
  if (nm != top.strings.end()) m->name = nm->second;
  return MorphableModel(std::move(m));
}

const std::string& MorphableModel::path() const { return impl_->path; }
int64_t MorphableModel::num_vertices() const { return impl_->n; }
int64_t MorphableModel::num_faces() const { return impl_->f; }
int MorphableModel::shape_components() const { return impl_->ks; }
int MorphableModel::tex_components() const { return impl_->kt; }
const float* MorphableModel::shape_mean() const { return impl_->shape_mean; }
const float* MorphableModel::shape_basis() const { return impl_->shape_basis; }
const float* MorphableModel::shape_sigma() const { return impl_->shape_sigma; }
const float* MorphableModel::tex_mean() const { return impl_->tex_mean; }
const float* MorphableModel::tex_basis() const { return impl_->tex_basis; }
const float* MorphableModel::tex_sigma() const { return impl_->tex_sigma; }
const int32_t* MorphableModel::faces() const { return impl_->faces; }
const int32_t* MorphableModel::landmarks() const { return impl_->landmarks; }
int64_t MorphableModel::num_landmarks() const { return impl_->n_landmarks; }
const std::string& MorphableModel::metadata_json() const { return impl_->metadata; }
const std::string& MorphableModel::name() const { return impl_->name; }
bool MorphableModel::synthetic() const { return impl_->synthetic; }

CoeffLayout MorphableModel::default_layout() const {
  CoeffLayout l;
  l.stride = impl_->ks + impl_->kt;
  l.shape_offset = 0;
  l.tex_offset = impl_->ks;
  return l;
}

void MorphableModel::make_float16_bases() {
  if (has_float16_bases()) return;
  const size_t n3 = (size_t)(3 * impl_->n);
  auto convert = [n3](const float* src, int k, std::vector<uint16_t>* dst) {
    dst->resize((size_t)k * n3);
    for (size_t i = 0; i < dst->size(); ++i) (*dst)[i] = float_to_half(src[i]);
  };
  convert(impl_->shape_basis, impl_->ks, &impl_->shape_basis_f16);
  convert(impl_->tex_basis, impl_->kt, &impl_->tex_basis_f16);
}

bool MorphableModel::has_float16_bases() const {
  return impl_->shape_basis_f16.size() == (size_t)impl_->ks * 3 * impl_->n &&
         impl_->tex_basis_f16.size() == (size_t)impl_->kt * 3 * impl_->n && (impl_->ks + impl_->kt) > 0;
}

DecodeParams MorphableModel::decode_params(const float* coeffs, int64_t batch, const CoeffLayout& layout,
                                           BasisType basis) const {
  DecodeParams p;
  if (basis == BasisType::Float16) {
    if (!has_float16_bases())
      throw InvalidInput("decode_params: basis: expected Float32, or Float16 after make_float16_bases(), found Float16");
    p.shape_basis = impl_->shape_basis_f16.data();
    p.tex_basis = impl_->tex_basis_f16.data();
  } else {
    p.shape_basis = impl_->shape_basis;
    p.tex_basis = impl_->tex_basis;
  }
  p.basis_type = basis;
  p.shape_mean = impl_->shape_mean;
  p.tex_mean = impl_->tex_mean;
  p.num_vertices = impl_->n;
  p.shape_components = impl_->ks;
  p.tex_components = impl_->kt;
  p.coeffs = coeffs;
  p.batch = batch;
  p.coeff_stride = layout.stride;
  p.shape_offset = layout.shape_offset;
  p.tex_offset = layout.tex_offset;
  return p;
}

DecodeParams MorphableModel::decode_params(const float* coeffs, int64_t batch) const {
  return decode_params(coeffs, batch, default_layout(), BasisType::Float32);
}

}  // namespace e3dmm
