// Reader of the `.e3dmm` model cache, version 1 (docs/model_cache_format.md, the one strict
// specification; engine/morphable/cache.py reads by the same rules in the same order).
// The file is mapped read-only; every offset and size is checked against the real file
// size, in overflow-free uint64 arithmetic, before a pointer into the mapping is formed, so
// no input can make us read outside it.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>
#include <map>
#include <vector>

#include "e3dmm/errors.h"
#include "e3dmm/limits.h"
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
  static const char* hex = "0123456789abcdef";
  std::string s = "\"";
  for (size_t i = 0; i < n; ++i) {
    if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\') {
      s += (char)p[i];
    } else {
      s += "\\x";
      s += hex[p[i] >> 4];
      s += hex[p[i] & 15];
    }
  }
  return s + '"';
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
  int ks = 0, kt = 0, ke = 0;
  const float *shape_mean = nullptr, *shape_basis = nullptr, *shape_sigma = nullptr;
  const float *tex_mean = nullptr, *tex_basis = nullptr, *tex_sigma = nullptr;
  const float *expr_mean = nullptr, *expr_basis = nullptr, *expr_sigma = nullptr;
  const int32_t *faces = nullptr, *landmarks = nullptr, *landmarks_outer = nullptr;
  std::vector<uint16_t> shape_basis_f16, tex_basis_f16, expr_basis_f16;

  ~Impl() {
    if (map) munmap(map, map_bytes);
  }
};

MorphableModel::MorphableModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MorphableModel::MorphableModel(MorphableModel&&) noexcept = default;
MorphableModel& MorphableModel::operator=(MorphableModel&&) noexcept = default;
MorphableModel::~MorphableModel() = default;

namespace {

// The arrays of version 1 in the writer's table order, with their dtype and rank.
struct ArraySpec {
  const char* name;
  uint32_t dtype, ndim;
};
constexpr ArraySpec kArrays[] = {{"shape_mean", kFloat32, 1},      {"shape_basis", kFloat32, 2},
                                 {"shape_sigma", kFloat32, 1},     {"tex_mean", kFloat32, 1},
                                 {"tex_basis", kFloat32, 2},       {"tex_sigma", kFloat32, 1},
                                 {"faces", kInt32, 2},             {"landmarks", kInt32, 1},
                                 {"landmarks_outer", kInt32, 1},   {"expression_mean", kFloat32, 1},
                                 {"expression_basis", kFloat32, 2}, {"expression_sigma", kFloat32, 1}};
constexpr uint32_t kRequired = 7;  // the first seven; the others are optional
constexpr uint32_t kAllArrays = sizeof kArrays / sizeof kArrays[0];
constexpr const char* kExpression[3] = {"expression_mean", "expression_basis", "expression_sigma"};
constexpr uint64_t kMaxDim = (uint64_t(1) << 31) - 1;
constexpr uint64_t kMaxMetadataBytes = uint64_t(1) << 20;

std::string names_list() {
  std::string s;
  for (const ArraySpec& a : kArrays) s += (s.empty() ? "" : ", ") + std::string(a.name);
  return s;
}

std::string dims_of(const Entry& e) {
  return e.ndim == 1 ? "[" + u64s(e.dim0) + "]" : "[" + u64s(e.dim0) + ", " + u64s(e.dim1) + "]";
}

// Rule 10: every value finite. Integer tests on the exponent bits in one branch-free pass
// (vectorised); on failure a second pass counts and locates. The message is the one
// engine/morphable/model.py's check_finite gives for the same array.
void check_finite(const std::string& path, const char* name, const float* a, uint64_t d0, uint64_t d1, bool matrix) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(a);
  const uint64_t count = d0 * d1;
  auto nonfinite = [&](uint64_t i) { return (read_le<uint32_t>(bytes + 4 * i) & 0x7f800000u) == 0x7f800000u; };
  uint32_t any = 0;
  for (uint64_t i = 0; i < count; ++i) any |= nonfinite(i);
  if (!any) return;
  uint64_t n_bad = 0, first = 0;
  for (uint64_t i = count; i-- > 0;)
    if (nonfinite(i)) ++n_bad, first = i;
  const uint32_t b = read_le<uint32_t>(bytes + 4 * first);
  const char* value = (b & 0x007fffffu) ? "nan" : (b >> 31) ? "-inf" : "inf";
  const std::string shape = matrix ? "[" + u64s(d0) + ", " + u64s(d1) + "]" : "[" + u64s(d0) + "]";
  const std::string at = matrix ? "[" + u64s(first / d1) + ", " + u64s(first % d1) + "]" : "[" + u64s(first) + "]";
  bad(path, name, "finite values (no NaN or Inf)",
      u64s(n_bad) + " non-finite value" + (n_bad > 1 ? "s" : "") + " in float32" + shape + ", the first " + value +
          " at " + at);
}

}  // namespace

MorphableModel MorphableModel::load(const std::string& path) {
  auto m = std::make_unique<Impl>();
  m->path = path;
  // ---- 1. a regular file, mapped read-only ----
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) bad(path, "file", "an .e3dmm cache file", "nothing at this path");
    bad(path, "file", "a readable .e3dmm cache file", std::strerror(err));
  }
  struct stat st = {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const bool dir = S_ISDIR(st.st_mode);
    ::close(fd);
    bad(path, "file", "an .e3dmm cache file", dir ? "a folder" : "a special file (not a regular file)");
  }
  const uint64_t size = (uint64_t)st.st_size;
  if (size < sizeof kMagic) {
    ::close(fd);
    bad(path, "magic", "the bytes \"E3DMMBIN\" (an .e3dmm model cache)", "a file of " + u64s(size) + " bytes");
  }
  m->map = mmap(nullptr, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (m->map == MAP_FAILED) {
    m->map = nullptr;
    bad(path, "file", "a readable file that can be memory-mapped", std::strerror(map_err));
  }
  m->map_bytes = (size_t)size;
  const uint8_t* base = static_cast<const uint8_t*>(m->map);

  // ---- 2-3. header ----
  if (std::memcmp(base, kMagic, sizeof kMagic) != 0)
    bad(path, "magic", "the bytes \"E3DMMBIN\" (an .e3dmm model cache)", printable(base, sizeof kMagic));
  if (size < kHeaderBytes) bad(path, "header", "64 bytes", "a file of " + u64s(size) + " bytes");
  const uint32_t version = read_le<uint32_t>(base + 8);
  if (version != kVersion) bad(path, "version", "1", u64s(version));
  for (int i = 40; i < 64; ++i)
    if (base[i] != 0) bad(path, "reserved", "24 zero bytes", "a non-zero byte at offset " + std::to_string(i));
  const uint32_t count = read_le<uint32_t>(base + 12);
  const uint64_t meta_off = read_le<uint64_t>(base + 16), meta_n = read_le<uint64_t>(base + 24);
  const uint64_t file_n = read_le<uint64_t>(base + 32);
  if (file_n != size) bad(path, "file_nbytes", "the real file size " + u64s(size) + " (truncated or extended?)", u64s(file_n));
  if (count < kRequired || count > kAllArrays)
    bad(path, "array_count", std::to_string(kRequired) + " to " + std::to_string(kAllArrays) + " records", u64s(count));
  const uint64_t table_end = kHeaderBytes + kEntryBytes * (uint64_t)count;
  if (table_end > size)
    bad(path, "array_count", "a table that fits the file of " + u64s(size) + " bytes", u64s(count) + " records");
  // ---- 4. the metadata range (meta_off >= table_end and meta_n <= size - meta_off: no u64 overflow) ----
  if (meta_n < 2 || meta_n > kMaxMetadataBytes || meta_off < table_end || meta_off > size || meta_n > size - meta_off)
    bad(path, "metadata_offset/metadata_nbytes",
        "2 to " + u64s(kMaxMetadataBytes) + " bytes after the array table (>= " + u64s(table_end) +
            ") inside the file of " + u64s(size) + " bytes",
        "offset " + u64s(meta_off) + ", " + u64s(meta_n) + " bytes");

  // ---- 5. each record ----
  std::map<std::string, Entry> arrays;
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* r = base + kHeaderBytes + kEntryBytes * i;
    size_t len = 0;
    while (len < 24 && r[len] != 0) ++len;
    const ArraySpec* spec = nullptr;
    for (const ArraySpec& a : kArrays)
      if (std::strlen(a.name) == len && std::memcmp(a.name, r, len) == 0) spec = &a;
    bool padded = true;
    for (size_t j = len; j < 24; ++j) padded &= r[j] == 0;
    if (!spec || !padded) {
      size_t shown = 24;
      while (shown > 0 && r[shown - 1] == 0) --shown;
      bad(path, "array table record " + std::to_string(i) + " name", "one of " + names_list() + ", NUL-padded to 24 bytes",
          printable(r, shown));
    }
    Entry e;
    e.name = spec->name;
    const std::string field = "array '" + e.name + "'";
    if (arrays.count(e.name)) bad(path, field, "one record per name", "a second record");
    e.dtype = read_le<uint32_t>(r + 24);
    e.ndim = read_le<uint32_t>(r + 28);
    e.dim0 = read_le<uint64_t>(r + 32);
    e.dim1 = read_le<uint64_t>(r + 40);
    e.offset = read_le<uint64_t>(r + 48);
    e.nbytes = read_le<uint64_t>(r + 56);
    if (e.dtype != spec->dtype)
      bad(path, field + " dtype", std::to_string(spec->dtype) + " (" + dtype_name(spec->dtype) + ")", u64s(e.dtype));
    if (e.ndim != spec->ndim) bad(path, field + " ndim", std::to_string(spec->ndim), u64s(e.ndim));
    if (e.dim0 < 1 || e.dim0 > kMaxDim || e.dim1 < 1 || e.dim1 > kMaxDim || (e.ndim == 1 && e.dim1 != 1))
      bad(path, field + " dims", "dim0 and dim1 in [1, " + u64s(kMaxDim) + "]" + (e.ndim == 1 ? ", dim1 = 1" : ""),
          "(" + u64s(e.dim0) + ", " + u64s(e.dim1) + ")");
    const uint64_t item = 4;  // float32 and int32
    uint64_t want = 0;  // dims < 2^31, so this cannot overflow; checked all the same
    if (__builtin_mul_overflow(e.dim0, e.dim1, &want) || __builtin_mul_overflow(want, item, &want) || want != e.nbytes)
      bad(path, field + " nbytes",
          "dim0 * dim1 * itemsize = " + u64s(e.dim0) + " * " + u64s(e.dim1) + " * " + u64s(item), u64s(e.nbytes));
    if (e.offset % 64 != 0) bad(path, field + " offset", "a multiple of 64", u64s(e.offset));
    if (e.offset < table_end || e.offset > size || e.nbytes > size - e.offset)
      bad(path, field + " offset/nbytes",
          "a range after the array table (>= " + u64s(table_end) + ") inside the file of " + u64s(size) + " bytes",
          "offset " + u64s(e.offset) + ", " + u64s(e.nbytes) + " bytes");
    arrays.emplace(e.name, e);
  }
  // ---- 6. every required array, the optional ones in their groups ----
  {
    std::string have;  // Python's sorted(list) repr: std::map iterates in the same byte order
    for (const auto& kv : arrays) have += (have.empty() ? "'" : ", '") + kv.first + "'";
    have = "arrays [" + have + "]";
    for (uint32_t i = 0; i < kRequired; ++i)
      if (!arrays.count(kArrays[i].name))
        bad(path, std::string("array '") + kArrays[i].name + "'", "present (required)", have);
    if (arrays.count("landmarks_outer") && !arrays.count("landmarks"))
      bad(path, "array 'landmarks'", "present (required with landmarks_outer)", have);
    int n_expr = 0;
    for (const char* e : kExpression) n_expr += (int)arrays.count(e);
    if (n_expr > 0 && n_expr < 3)
      for (const char* e : kExpression)
        if (!arrays.count(e))
          bad(path, std::string("array '") + e + "'",
              "present (the expression arrays come together: expression_mean, expression_basis, expression_sigma)",
              have);
  }
  // ---- 7. no two ranges overlap (all inside the file, so end = offset + nbytes cannot overflow) ----
  {
    struct Range {
      uint64_t start, end;
      std::string what;
      bool operator<(const Range& o) const { return start != o.start ? start < o.start : end != o.end ? end < o.end : what < o.what; }
    };
    std::vector<Range> ranges = {{meta_off, meta_off + meta_n, "the metadata"}};
    for (const auto& kv : arrays)
      ranges.push_back({kv.second.offset, kv.second.offset + kv.second.nbytes, "array '" + kv.first + "'"});
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i)
      if (ranges[i].start < ranges[i - 1].end)
        bad(path, ranges[i].what + " offset",
            "a range that does not overlap " + ranges[i - 1].what + " (which ends at " + u64s(ranges[i - 1].end) + ")",
            "offset " + u64s(ranges[i].start));
  }

  // ---- 8. the model's shapes and bounds: N, Ks, Kt, F, L ----
  const Entry& smean = arrays.at("shape_mean");
  const uint64_t n3 = smean.dim0;
  if (n3 % 3 != 0 || n3 / 3 < 1 || n3 / 3 > (uint64_t)kMaxVertices)
    bad(path, "array 'shape_mean' shape", "[3N] with 1 <= N <= " + std::to_string(kMaxVertices), dims_of(smean));
  const std::string s3n = u64s(n3);
  for (const char* prefix : {"shape", "tex"}) {
    const std::string pre(prefix), k = pre == "shape" ? "Ks" : "Kt";
    if (pre == "tex" && arrays.at("tex_mean").dim0 != n3)
      bad(path, "array 'tex_mean' shape", "[" + s3n + "] (3N from shape_mean)", dims_of(arrays.at("tex_mean")));
    const Entry& basis = arrays.at(pre + "_basis");
    if (basis.dim1 != n3 || basis.dim0 < 1 || basis.dim0 > (uint64_t)kMaxComponents)
      bad(path, "array '" + pre + "_basis' shape",
          "[" + k + ", " + s3n + "] with 1 <= " + k + " <= " + std::to_string(kMaxComponents) + " (3N from shape_mean)",
          dims_of(basis));
    const Entry& sigma = arrays.at(pre + "_sigma");
    if (sigma.dim0 != basis.dim0)
      bad(path, "array '" + pre + "_sigma' shape", "[" + u64s(basis.dim0) + "] (" + k + " from " + pre + "_basis)",
          dims_of(sigma));
  }
  const Entry& faces = arrays.at("faces");
  if (faces.dim1 != 3 || faces.dim0 < 1 || faces.dim0 > (uint64_t)kMaxFaces)
    bad(path, "array 'faces' shape", "[F, 3] with 1 <= F <= " + std::to_string(kMaxFaces), dims_of(faces));
  auto lm = arrays.find("landmarks");
  if (lm != arrays.end() && (lm->second.dim0 < 1 || lm->second.dim0 > (uint64_t)kMaxLandmarks))
    bad(path, "array 'landmarks' shape", "[L] with 1 <= L <= " + std::to_string(kMaxLandmarks), dims_of(lm->second));
  auto lm_outer = arrays.find("landmarks_outer");
  if (lm_outer != arrays.end() && lm_outer->second.dim0 != lm->second.dim0)  // step 6: landmarks is there
    bad(path, "array 'landmarks_outer' shape", "[" + u64s(lm->second.dim0) + "] (L from landmarks)",
        dims_of(lm_outer->second));
  const bool has_expr = arrays.count("expression_mean") > 0;  // step 6: then all three
  if (has_expr) {
    const Entry& emean = arrays.at("expression_mean");
    if (emean.dim0 != n3) bad(path, "array 'expression_mean' shape", "[" + s3n + "] (3N from shape_mean)", dims_of(emean));
    const Entry& ebasis = arrays.at("expression_basis");
    if (ebasis.dim1 != n3 || ebasis.dim0 < 1 || ebasis.dim0 > (uint64_t)kMaxComponents)
      bad(path, "array 'expression_basis' shape",
          "[Ke, " + s3n + "] with 1 <= Ke <= " + std::to_string(kMaxComponents) + " (3N from shape_mean)",
          dims_of(ebasis));
    const Entry& esigma = arrays.at("expression_sigma");
    if (esigma.dim0 != ebasis.dim0)
      bad(path, "array 'expression_sigma' shape", "[" + u64s(ebasis.dim0) + "] (Ke from expression_basis)",
          dims_of(esigma));
  }

  // ---- 9. metadata ----
  m->metadata.assign(reinterpret_cast<const char*>(base + meta_off), (size_t)meta_n);
  const size_t bad_utf8 = first_invalid_utf8(m->metadata);
  if (bad_utf8 != std::string::npos)
    bad(path, "metadata", "UTF-8 text", "an invalid byte sequence at byte " + std::to_string(bad_utf8));
  json_lite::TopLevel top;
  std::string jerr;
  if (!json_lite::parse_object(m->metadata, &top, &jerr))
    bad(path, "metadata", "a JSON object (RFC 8259, the limits of docs/model_cache_format.md)", "invalid JSON: " + jerr);
  for (const char* key : {"format", "synthetic", "name", "source"})
    if (!top.kinds.count(key)) bad(path, std::string("metadata \"") + key + "\"", "this required key", "missing");
  auto fmt = top.strings.find("format");
  if (fmt == top.strings.end() || fmt->second != "e3dmm-cache")
    bad(path, "metadata \"format\"", "\"e3dmm-cache\"",
        fmt == top.strings.end() ? "a JSON value that is not a string" : '"' + fmt->second + '"');
  auto syn = top.bools.find("synthetic");
  if (syn == top.bools.end()) bad(path, "metadata \"synthetic\"", "true or false", "a JSON value that is not a boolean");
  m->synthetic = syn->second;
  for (const char* key : {"name", "source"})
    if (!top.strings.count(key))
      bad(path, std::string("metadata \"") + key + "\"", "a string", "a JSON value that is not a string");
  m->name = top.strings.at("name");

  // ---- 10. values ----
  m->n = (int64_t)(n3 / 3);
  m->ks = (int)arrays.at("shape_basis").dim0;
  m->kt = (int)arrays.at("tex_basis").dim0;
  m->f = (int64_t)faces.dim0;
  auto at = [&](const char* name) { return static_cast<const void*>(base + arrays.at(name).offset); };
  m->shape_mean = static_cast<const float*>(at("shape_mean"));
  m->shape_basis = static_cast<const float*>(at("shape_basis"));
  m->shape_sigma = static_cast<const float*>(at("shape_sigma"));
  m->tex_mean = static_cast<const float*>(at("tex_mean"));
  m->tex_basis = static_cast<const float*>(at("tex_basis"));
  m->tex_sigma = static_cast<const float*>(at("tex_sigma"));
  m->faces = static_cast<const int32_t*>(at("faces"));
  for (uint32_t i = 0; i < 6; ++i) {  // the six float arrays, in table order
    const Entry& e = arrays.at(kArrays[i].name);
    check_finite(path, kArrays[i].name, static_cast<const float*>(at(kArrays[i].name)), e.dim0, e.dim1, e.ndim == 2);
  }
  // A bad face or landmark index would make every consumer read out of bounds.
  const int32_t nmax = (int32_t)m->n;
  for (int64_t i = 0; i < 3 * m->f; ++i) {
    const int32_t v = read_le<int32_t>(reinterpret_cast<const uint8_t*>(m->faces + i));
    if (v < 0 || v >= nmax)
      bad(path, "array 'faces'[" + std::to_string(i / 3) + ", " + std::to_string(i % 3) + "]",
                "a vertex index in [0, " + std::to_string(nmax) + ")", std::to_string(v));
  }
  auto check_indices = [&](const char* name, const int32_t* idx, int64_t count) {
    for (int64_t i = 0; i < count; ++i) {
      const int32_t v = read_le<int32_t>(reinterpret_cast<const uint8_t*>(idx + i));
      if (v < 0 || v >= nmax)
        bad(path, std::string("array '") + name + "'[" + std::to_string(i) + "]",
            "a vertex index in [0, " + std::to_string(nmax) + ")", std::to_string(v));
    }
  };
  if (lm != arrays.end()) {
    m->landmarks = static_cast<const int32_t*>(at("landmarks"));
    m->n_landmarks = (int64_t)lm->second.dim0;
    check_indices("landmarks", m->landmarks, m->n_landmarks);
  }
  if (lm_outer != arrays.end()) {
    m->landmarks_outer = static_cast<const int32_t*>(at("landmarks_outer"));
    check_indices("landmarks_outer", m->landmarks_outer, m->n_landmarks);
  }
  if (has_expr) {  // the expression arrays last, as engine/morphable/model.py's validate_arrays
    for (const char* name : kExpression) {
      const Entry& e = arrays.at(name);
      check_finite(path, name, static_cast<const float*>(at(name)), e.dim0, e.dim1, e.ndim == 2);
    }
    m->expr_mean = static_cast<const float*>(at("expression_mean"));
    m->expr_basis = static_cast<const float*>(at("expression_basis"));
    m->expr_sigma = static_cast<const float*>(at("expression_sigma"));
    m->ke = (int)arrays.at("expression_basis").dim0;
  }
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
const int32_t* MorphableModel::landmarks_outer() const { return impl_->landmarks_outer; }
int64_t MorphableModel::num_landmarks() const { return impl_->n_landmarks; }
int MorphableModel::expression_components() const { return impl_->ke; }
const float* MorphableModel::expression_mean() const { return impl_->expr_mean; }
const float* MorphableModel::expression_basis() const { return impl_->expr_basis; }
const float* MorphableModel::expression_sigma() const { return impl_->expr_sigma; }
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
  const std::string& path = impl_->path;
  // A finite value beyond float16's range would become Inf, and then every decode NaN or Inf
  // (0 * Inf is NaN): refused, naming the element, before anything is kept.
  auto convert = [&](const char* name, const float* src, int k, std::vector<uint16_t>* dst) {
    std::vector<uint16_t> out((size_t)k * n3);
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = float_to_half(src[i]);
      if ((out[i] & 0x7c00u) == 0x7c00u) {
        char v[32];
        *std::to_chars(v, v + sizeof v - 1, src[i]).ptr = 0;
        throw InvalidInput("make_float16_bases: " + path + ": " + name + "[" + std::to_string(i / n3) + ", " +
                           std::to_string(i % n3) + "]: expected a value float16 can hold (|v| < 65520), found " + v +
                           "; decode this model with Float32 bases");
      }
    }
    *dst = std::move(out);
  };
  std::vector<uint16_t> shape, tex, expr;
  convert("shape_basis", impl_->shape_basis, impl_->ks, &shape);
  convert("tex_basis", impl_->tex_basis, impl_->kt, &tex);
  if (impl_->ke > 0) convert("expression_basis", impl_->expr_basis, impl_->ke, &expr);
  impl_->shape_basis_f16 = std::move(shape);
  impl_->tex_basis_f16 = std::move(tex);
  impl_->expr_basis_f16 = std::move(expr);
}

bool MorphableModel::has_float16_bases() const {
  return impl_->shape_basis_f16.size() == (size_t)impl_->ks * 3 * impl_->n &&
         impl_->tex_basis_f16.size() == (size_t)impl_->kt * 3 * impl_->n &&
         impl_->expr_basis_f16.size() == (size_t)impl_->ke * 3 * impl_->n && (impl_->ks + impl_->kt) > 0;
}

DecodeParams MorphableModel::decode_params(const float* coeffs, int64_t batch, const CoeffLayout& layout,
                                           BasisType basis) const {
  DecodeParams p;
  if (basis == BasisType::Float16) {
    if (!has_float16_bases())
      throw InvalidInput("decode_params: basis: expected Float32, or Float16 after make_float16_bases(), found Float16");
    p.shape_basis = impl_->shape_basis_f16.data();
    p.tex_basis = impl_->tex_basis_f16.data();
    p.expr_basis = impl_->ke > 0 ? impl_->expr_basis_f16.data() : nullptr;
  } else {
    p.shape_basis = impl_->shape_basis;
    p.tex_basis = impl_->tex_basis;
    p.expr_basis = impl_->expr_basis;
  }
  p.expr_mean = impl_->expr_mean;
  p.expr_components = impl_->ke;  // the term is added only when the caller sets p.expr_coeffs
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
