// libFuzzer target: the C++ cache reader, e3dmm::MorphableModel::load, on a file holding the
// fuzz input, then (when it loads) one decode of every kind on the model: CPU kernel,
// float16 bases, the CUDA body run on the host, and both PLY encodings. Built with clang
// -fsanitize=fuzzer,address,undefined (cmake -DENGINE_BUILD_FUZZERS=ON; see tests/fuzz/README.md).
//
// Oracles beyond "no crash, no sanitizer report": load throws nothing but ModelFileError; a
// model that loads has every face index in [0, N); zero coefficients decode to exactly the
// mean shape and the clamped, truncated mean colour in every path.
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "e3dmm/decode.h"
#include "e3dmm/errors.h"
#include "e3dmm/mesh.h"
#include "e3dmm/model.h"

namespace {

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "fuzz_cache: invariant broken: %s\n", what);
  std::abort();
}

// The input as a file without touching the disk: a memfd, opened by path like a user's file.
const std::string& input_path(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("e3dmm-fuzz-cache", MFD_CLOEXEC);
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (fd < 0 || ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) broken("memfd");
  return path;
}

uint8_t color_of(float v) { return (uint8_t)(int)(v > 0.f ? (v < 255.f ? v : 255.f) : 0.f); }

void decode_everything(e3dmm::MorphableModel& m) {
  const int64_t n = m.num_vertices();
  for (int64_t i = 0; i < 3 * m.num_faces(); ++i)
    if (m.faces()[i] < 0 || m.faces()[i] >= n) broken("a face index outside [0, N) was accepted");
  const int k = m.shape_components() + m.tex_components();
  std::vector<float> zeros((size_t)k, 0.f), ones((size_t)k, 1.f);
  std::vector<float> vertices((size_t)(3 * n));
  std::vector<uint8_t> colors((size_t)(3 * n)), records((size_t)n * e3dmm::kRecordBytes);
  auto check_mean = [&](const char* path) {
    for (int64_t i = 0; i < 3 * n; ++i) {
      if (vertices[i] != m.shape_mean()[i]) broken(path);
      if (colors[i] != color_of(m.tex_mean()[i])) broken(path);
    }
  };
  e3dmm::DecodeParams p = m.decode_params(zeros.data(), 1);
  p.vertices = vertices.data();
  p.colors = colors.data();
  p.records = records.data();
  e3dmm::decode_cpu(p, 1);
  check_mean("zero coefficients: the CPU kernel did not give the mean");
  e3dmm::decode_cuda_body_on_host(p);
  check_mean("zero coefficients: the CUDA body did not give the mean");
  bool half = true;
  try {
    m.make_float16_bases();
  } catch (const e3dmm::InvalidInput&) {
    half = false;  // a basis value beyond float16's range: refused, as documented
  }
  if (half) {
    e3dmm::DecodeParams h = m.decode_params(zeros.data(), 1, m.default_layout(), e3dmm::BasisType::Float16);
    h.vertices = vertices.data();
    h.colors = colors.data();
    h.records = records.data();
    e3dmm::decode_cpu(h, 1);
    check_mean("zero coefficients: the float16 kernel did not give the mean");
  }
  (void)e3dmm::ply_bytes(records.data(), n, m.faces(), m.num_faces(), e3dmm::PlyFormat::BinaryLittleEndian);
  (void)e3dmm::ply_bytes(records.data(), n, m.faces(), m.num_faces(), e3dmm::PlyFormat::Ascii);
  // Unit coefficients read every basis element; huge bases may overflow to Inf, which the
  // writer refuses (InvalidInput): that is the writer's contract, not a finding.
  p.coeffs = ones.data();
  e3dmm::decode_cpu(p, 1);
  try {
    (void)e3dmm::ply_bytes(records.data(), n, m.faces(), m.num_faces(), e3dmm::PlyFormat::Ascii);
  } catch (const e3dmm::InvalidInput&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = input_path(data, size);
  try {
    e3dmm::MorphableModel m = e3dmm::MorphableModel::load(path);
    decode_everything(m);
  } catch (const e3dmm::ModelFileError&) {
    // the expected outcome for a bad file; any other exception escapes and is a finding
  }
  return 0;
}
