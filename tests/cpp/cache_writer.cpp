#include "cache_writer.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>

namespace testutil {

const char* const kNames[8] = {"shape_mean", "shape_basis", "shape_sigma", "tex_mean",
                               "tex_basis",  "tex_sigma",   "faces",       "landmarks"};

TinyModel make_model(int64_t n, int64_t f, int ks, int kt, unsigned seed, bool with_landmarks) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.f, 1.f);
  std::uniform_real_distribution<float> u(20.f, 230.f);
  TinyModel m;
  m.n = n;
  m.f = f;
  m.ks = ks;
  m.kt = kt;
  for (int64_t i = 0; i < 3 * n; ++i) m.shape_mean.push_back(50.f * g(rng));
  for (int64_t i = 0; i < ks * 3 * n; ++i) m.shape_basis.push_back(2.f * g(rng));
  for (int k = 0; k < ks; ++k) m.shape_sigma.push_back(1.f + k);
  for (int64_t i = 0; i < 3 * n; ++i) m.tex_mean.push_back(u(rng));
  for (int64_t i = 0; i < kt * 3 * n; ++i) m.tex_basis.push_back(10.f * g(rng));
  for (int k = 0; k < kt; ++k) m.tex_sigma.push_back(2.f + k);
  std::uniform_int_distribution<int32_t> vi(0, (int32_t)n - 1);
  for (int64_t i = 0; i < 3 * f; ++i) m.faces.push_back(vi(rng));
  if (with_landmarks)
    for (int i = 0; i < 68; ++i) m.landmarks.push_back(vi(rng));
  m.metadata = "{\"format\": \"e3dmm-cache\", \"name\": \"tiny \\u00e9 test\", \"source\": \"tests/cpp\", "
               "\"synthetic\": true, \"extra\": {\"nested\": [1, 2.5e-3, null, false]}}";
  return m;
}

namespace {

struct Arr {
  const void* data;
  uint32_t dtype, ndim;
  uint64_t d0, d1, nbytes;
};

size_t align64(size_t v) { return (v + 63) / 64 * 64; }

}  // namespace

std::vector<uint8_t> cache_bytes(const TinyModel& m) {
  const uint64_t n3 = (uint64_t)(3 * m.n);
  std::vector<Arr> arrs = {
      {m.shape_mean.data(), 1, 1, n3, 1, 4 * n3},
      {m.shape_basis.data(), 1, 2, (uint64_t)m.ks, n3, 4 * n3 * m.ks},
      {m.shape_sigma.data(), 1, 1, (uint64_t)m.ks, 1, 4ull * m.ks},
      {m.tex_mean.data(), 1, 1, n3, 1, 4 * n3},
      {m.tex_basis.data(), 1, 2, (uint64_t)m.kt, n3, 4 * n3 * m.kt},
      {m.tex_sigma.data(), 1, 1, (uint64_t)m.kt, 1, 4ull * m.kt},
      {m.faces.data(), 3, 2, (uint64_t)m.f, 3, 12ull * m.f},
  };
  if (!m.landmarks.empty()) arrs.push_back({m.landmarks.data(), 3, 1, m.landmarks.size(), 1, 4 * m.landmarks.size()});
  const size_t table_end = 64 + 64 * arrs.size();
  size_t pos = align64(table_end + m.metadata.size());
  std::vector<uint64_t> offsets;
  for (const Arr& a : arrs) {
    offsets.push_back(pos);
    pos = align64(pos + a.nbytes);
  }
  const size_t total = offsets.back() + arrs.back().nbytes;
  std::vector<uint8_t> b(total, 0);
  std::memcpy(b.data(), "E3DMMBIN", 8);
  put_u32(&b, 8, 1);
  put_u32(&b, 12, (uint32_t)arrs.size());
  put_u64(&b, 16, table_end);
  put_u64(&b, 24, m.metadata.size());
  put_u64(&b, 32, total);
  for (size_t i = 0; i < arrs.size(); ++i) {
    std::strncpy(reinterpret_cast<char*>(&b[rec((int)i, 0)]), kNames[i], 24);
    put_u32(&b, rec((int)i, 24), arrs[i].dtype);
    put_u32(&b, rec((int)i, 28), arrs[i].ndim);
    put_u64(&b, rec((int)i, 32), arrs[i].d0);
    put_u64(&b, rec((int)i, 40), arrs[i].d1);
    put_u64(&b, rec((int)i, 48), offsets[i]);
    put_u64(&b, rec((int)i, 56), arrs[i].nbytes);
    if (arrs[i].nbytes) std::memcpy(&b[offsets[i]], arrs[i].data, arrs[i].nbytes);
  }
  std::memcpy(&b[table_end], m.metadata.data(), m.metadata.size());
  return b;
}

void put_u32(std::vector<uint8_t>* b, size_t at, uint32_t v) { std::memcpy(&(*b)[at], &v, 4); }
void put_u64(std::vector<uint8_t>* b, size_t at, uint64_t v) { std::memcpy(&(*b)[at], &v, 8); }
uint64_t get_u64(const std::vector<uint8_t>& b, size_t at) {
  uint64_t v;
  std::memcpy(&v, &b[at], 8);
  return v;
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), (std::streamsize)bytes.size());
  if (!f) throw std::runtime_error("test setup: cannot write " + path);
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/e3dmm_test_XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back(0);
  if (!mkdtemp(buf.data())) throw std::runtime_error("test setup: mkdtemp failed");
  path = buf.data();
}

std::vector<std::string> TempDir::list() const {
  std::vector<std::string> out;
  if (DIR* d = opendir(path.c_str())) {
    while (dirent* e = readdir(d))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) out.push_back(e->d_name);
    closedir(d);
  }
  return out;
}

TempDir::~TempDir() {
  // Only one level deep: the tests create plain files and at most read-only subfolders.
  for (const std::string& name : list()) {
    const std::string p = file(name);
    struct stat st;
    if (stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      chmod(p.c_str(), 0755);
      if (DIR* d = opendir(p.c_str())) {
        while (dirent* e = readdir(d))
          if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) unlink((p + "/" + e->d_name).c_str());
        closedir(d);
      }
      rmdir(p.c_str());
    } else {
      unlink(p.c_str());
    }
  }
  rmdir(path.c_str());
}

}  // namespace testutil
