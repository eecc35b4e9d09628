// e3dmm_decode: the C++ half of the hybrid pattern (see examples/hybrid.py).
// Python prepares the model cache (.e3dmm) and coefficient files (.npy float32 [B, 198], or one
// face's [198] as the engine writes NAME_face0.npy);
// this program decodes every row and writes one PLY per row, byte-identical to
// engine.mesh_io.write_ply for the same coefficients. Where the library was built with
// TensorRT it can also run a serialized engine on raw crops and decode on the GPU.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <clocale>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "e3dmm/e3dmm.h"
#include "npy.h"

#if defined(E3DMM_WITH_CUDA)
#include <cuda_runtime.h>
#endif

namespace {

const char* kUsage =
    "usage: e3dmm_decode --model MODEL.e3dmm --out DIR [options] COEFFS.npy...\n"
    "       e3dmm_decode --model MODEL.e3dmm --out DIR [options] --list FILE\n"
    "       e3dmm_decode --model MODEL.e3dmm --out DIR --engine NET.engine --crops CROPS.npy\n"
    "Writes DIR/<stem>_<row:04d>.ply for every row of every input file.\n"
    "  COEFFS.npy       float32 [B, C] network outputs (alpha at 0, beta at Ks; C >= Ks + Kt)\n"
    "  --list FILE      a text file with one .npy path per line (relative to the list's folder)\n"
    "  --ascii          ASCII PLY instead of binary little-endian\n"
    "  --comment TEXT   a PLY header comment (repeatable); a synthetic model adds a WARNING comment\n"
    "  --threads N      CPU decode threads (0: all)\n"
    "  --device cpu|cuda  where to decode (cuda: builds with CUDA and a GPU)\n"
    "  --engine FILE --crops CROPS.npy  run a TensorRT engine on float32 [B, 3, 224, 224] crops\n"
    "                   (builds with TensorRT), decode on the GPU\n";

// Appended to the PLY comments when the model is synthetic (same text as engine.pipeline).
const char* kSyntheticComment = "WARNING synthetic morphable model: not the Basel Face Model";

struct Options {
  std::string model, out, list, engine, crops, device = "cpu";
  std::vector<std::string> inputs, comments;
  bool ascii = false;
  int threads = 0;
};

std::string stem_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  const size_t dot = name.rfind('.');
  return dot == std::string::npos || dot == 0 ? name : name.substr(0, dot);
}

std::string row_path(const Options& o, const std::string& input, int64_t row) {
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, "_%04lld.ply", (long long)row);
  return o.out + "/" + stem_of(input) + suffix;
}

// "1 row", "2 rows": a count with its noun in the right number ("1 rows decoded" reads as a slip).
std::string count(int64_t n, const char* noun, const char* plural = nullptr) {
  return std::to_string(n) + " " + (n == 1 ? std::string(noun) : plural ? std::string(plural) : std::string(noun) + "s");
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<std::string> read_list(const std::string& list) {
  std::ifstream f(list);
  if (!f) throw e3dmm::InvalidInput(list + ": file: expected a readable list of .npy paths, found none");
  const size_t slash = list.find_last_of('/');
  const std::string folder = slash == std::string::npos ? "" : list.substr(0, slash + 1);
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    out.push_back(line[0] == '/' ? line : folder + line);
  }
  return out;
}

// Checks a coefficient array against the model: [B, C], or [C] (one face, as the engine writes
// NAME_face0.npy: a batch of one), with Ks + Kt <= C <= kMaxCoeffStride (sizes in int64: Ks + Kt
// and C are never summed or narrowed in int before the check). Returns {B, C}.
std::pair<int64_t, int64_t> check_coeffs(const std::string& path, const npy::Array& a,
                                         const e3dmm::MorphableModel& m) {
  const int64_t need = (int64_t)m.shape_components() + m.tex_components();
  const size_t rank = a.shape.size();
  const int64_t batch = rank == 1 ? 1 : rank == 2 ? a.dim(0) : 0;
  const int64_t width = rank == 1 ? a.dim(0) : rank == 2 ? a.dim(1) : 0;
  if (batch < 1 || width < need || width > e3dmm::kMaxCoeffStride) {
    std::string dims;
    for (size_t i = 0; i < rank; ++i) dims += (i ? ", " : "") + std::to_string(a.dim(i));
    throw e3dmm::InvalidInput(path + ": shape: expected float32 [B >= 1, C] or [C] with " + std::to_string(need) +
                              " <= C <= " + std::to_string(e3dmm::kMaxCoeffStride) + ", found rank " +
                              std::to_string(rank) + " [" + dims + "]");
  }
  return {batch, width};
}

// --out DIR is created (with its parents) before the first PLY is written, as the Python CLI
// creates its output folder; a run that fails before writing anything creates nothing.
void make_out_dir(const std::string& out) {
  std::error_code ec;
  if (std::filesystem::is_directory(out, ec)) return;
  if (std::filesystem::exists(out, ec))
    throw e3dmm::InvalidInput("--out " + out + ": expected a folder, found a file");
  std::filesystem::create_directories(out, ec);
  if (ec) throw e3dmm::InvalidInput("--out " + out + ": cannot create the folder: " + ec.message());
}

// Rows decoded per call: the record buffer is bounded (kChunkRows * N * 15 bytes, 45 MB for the
// BFM) whatever the number of rows in the input file.
constexpr int64_t kChunkRows = 64;

// A whole decimal int in [lo, hi], or -1 (no locale, no silent atoi-style garbage).
long long parse_int(const std::string& s, long long lo, long long hi) {
  long long v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  return (r.ec != std::errc() || r.ptr != s.data() + s.size() || v < lo || v > hi) ? -1 : v;
}

#if defined(E3DMM_WITH_CUDA)
void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw e3dmm::BackendError(std::string(what) + ": " + cudaGetErrorString(e));
}

// Device decode of `batch` rows at device pointer `d_coeffs`, records copied back to `host`.
void decode_on_gpu(e3dmm::CudaDecoder& dec, const float* d_coeffs, int64_t batch, const e3dmm::CoeffLayout& layout,
                   std::vector<uint8_t>* host, cudaStream_t stream) {
  uint8_t* d_rec = nullptr;
  cuda_ok(cudaMalloc(reinterpret_cast<void**>(&d_rec), host->size()), "cudaMalloc(records)");
  try {
    dec.decode(d_coeffs, batch, layout, nullptr, nullptr, d_rec, stream);
    cuda_ok(cudaMemcpyAsync(host->data(), d_rec, host->size(), cudaMemcpyDeviceToHost, stream), "copy records");
    dec.synchronize(stream);
  } catch (...) {
    cudaFree(d_rec);
    throw;
  }
  cudaFree(d_rec);
}

float* upload(const std::vector<float>& v, cudaStream_t stream) {
  float* d = nullptr;
  cuda_ok(cudaMalloc(reinterpret_cast<void**>(&d), v.size() * 4), "cudaMalloc(input)");
  cuda_ok(cudaMemcpyAsync(d, v.data(), v.size() * 4, cudaMemcpyHostToDevice, stream), "copy input");
  return d;
}
#endif

int run(const Options& o) {
  const e3dmm::PlyFormat fmt = o.ascii ? e3dmm::PlyFormat::Ascii : e3dmm::PlyFormat::BinaryLittleEndian;
  auto t0 = std::chrono::steady_clock::now();
  e3dmm::Decoder dec = e3dmm::Decoder::load(o.model, e3dmm::BasisType::Float32, o.threads);
  const e3dmm::MorphableModel& m = dec.model();
  std::printf("model: %s (%s, %s, %d + %d components)%s, loaded in %.1f ms\n", m.name().c_str(),
              count(m.num_vertices(), "vertex", "vertices").c_str(), count(m.num_faces(), "face").c_str(), m.shape_components(),
              m.tex_components(),
              m.synthetic() ? " [SYNTHETIC: not a real face model]" : "", ms_since(t0));
  const int64_t n = m.num_vertices();
  int64_t written = 0;
  // Every file made from the synthetic model says so, in the pipeline's words.
  std::vector<std::string> comments = o.comments;
  if (m.synthetic()) comments.push_back(kSyntheticComment);

  if (!o.engine.empty()) {
#if defined(E3DMM_WITH_CUDA)
    // Network and decode on one stream; the engine's output buffer feeds the decode directly.
    e3dmm::TensorRTRunner runner(o.engine);
    const npy::Array crops = npy::load_float32(o.crops);
    if (crops.shape.size() != 4 || crops.dim(1) != 3 || crops.dim(2) != 224 || crops.dim(3) != 224)
      throw e3dmm::InvalidInput(o.crops + ": shape: expected float32 [B, 3, 224, 224], found rank " +
                                std::to_string(crops.shape.size()));
    const int64_t batch = crops.dim(0);
    e3dmm::CudaDecoder gpu(m);
    e3dmm::CoeffLayout layout = m.default_layout();
    layout.stride = runner.output_width();
    cudaStream_t stream;
    cuda_ok(cudaStreamCreate(&stream), "cudaStreamCreate");
    float* d_in = upload(crops.data, stream);
    std::vector<uint8_t> rec((size_t)(batch * n * e3dmm::kRecordBytes));
    t0 = std::chrono::steady_clock::now();
    const float* d_coeffs = runner.run(d_in, batch, stream);
    decode_on_gpu(gpu, d_coeffs, batch, layout, &rec, stream);
    std::printf("%s: network + decode of %s in %.2f ms\n", o.crops.c_str(), count(batch, "crop").c_str(),
                ms_since(t0));
    cudaFree(d_in);
    cudaStreamDestroy(stream);
    make_out_dir(o.out);
    for (int64_t b = 0; b < batch; ++b, ++written)
      dec.write_ply(row_path(o, o.crops, b), rec.data() + b * n * e3dmm::kRecordBytes, fmt, comments);
#else
    throw e3dmm::Unavailable("--engine: this build of e3dmm has no CUDA, so no TensorRT runner");
#endif
  }

  std::vector<std::string> inputs = o.inputs;
  if (!o.list.empty())
    for (const std::string& p : read_list(o.list)) inputs.push_back(p);
  for (const std::string& path : inputs) {
    const npy::Array coeffs = npy::load_float32(path);
    const auto [batch, width] = check_coeffs(path, coeffs, m);
    e3dmm::CoeffLayout layout = m.default_layout();
    layout.stride = (int)width;
    double decode_ms = 0, write_ms = 0;
#if defined(E3DMM_WITH_CUDA)
    std::unique_ptr<e3dmm::CudaDecoder> gpu;
    if (o.device == "cuda") gpu.reset(new e3dmm::CudaDecoder(m));
#else
    if (o.device == "cuda") throw e3dmm::Unavailable("--device cuda: this build of e3dmm has no CUDA kernel");
#endif
    for (int64_t b0 = 0; b0 < batch; b0 += kChunkRows) {
      const int64_t rows = std::min(kChunkRows, batch - b0);
      const float* chunk = coeffs.data.data() + b0 * layout.stride;
      std::vector<uint8_t> rec((size_t)(rows * n * e3dmm::kRecordBytes));
      t0 = std::chrono::steady_clock::now();
#if defined(E3DMM_WITH_CUDA)
      if (gpu) {
        cudaStream_t stream;
        cuda_ok(cudaStreamCreate(&stream), "cudaStreamCreate");
        float* d_coeffs = upload(std::vector<float>(chunk, chunk + rows * layout.stride), stream);
        decode_on_gpu(*gpu, d_coeffs, rows, layout, &rec, stream);
        cudaFree(d_coeffs);
        cudaStreamDestroy(stream);
      } else
#endif
      {
        dec.decode(chunk, rows, layout, nullptr, nullptr, rec.data());
      }
      decode_ms += ms_since(t0);
      t0 = std::chrono::steady_clock::now();
      make_out_dir(o.out);
      for (int64_t r = 0; r < rows; ++r, ++written)
        dec.write_ply(row_path(o, path, b0 + r), rec.data() + r * n * e3dmm::kRecordBytes, fmt, comments);
      write_ms += ms_since(t0);
    }
    // Human-readable timings: the only output that follows the locale (a decimal comma under de_DE).
    std::printf("%s: %s decoded (%s) in %.2f ms, PLY written in %.2f ms\n", path.c_str(), count(batch, "row").c_str(),
                o.device.c_str(), decode_ms, write_ms);
  }
  std::printf("wrote %s to %s\n", count(written, "PLY file").c_str(), o.out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // As an application embedding the library would (every Qt program does): the PLY files must
  // not change with the user's locale (tests/test_cpp_example.py runs this under de_DE.UTF-8).
  std::setlocale(LC_ALL, "");
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: %s needs a value\n%s", name, kUsage);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--model") o.model = value("--model");
    else if (a == "--out") o.out = value("--out");
    else if (a == "--list") o.list = value("--list");
    else if (a == "--engine") o.engine = value("--engine");
    else if (a == "--crops") o.crops = value("--crops");
    else if (a == "--device") o.device = value("--device");
    else if (a == "--comment") o.comments.push_back(value("--comment"));
    else if (a == "--threads") {
      const std::string v = value("--threads");
      const long long t = parse_int(v, 0, 4096);
      if (t < 0) return std::fprintf(stderr, "error: --threads: expected an integer in [0, 4096], found %s\n", v.c_str()), 2;
      o.threads = (int)t;
    }
    else if (a == "--ascii") o.ascii = true;
    else if (a == "-h" || a == "--help") return std::printf("%s", kUsage), 0;
    else if (!a.empty() && a[0] == '-') return std::fprintf(stderr, "error: unknown option %s\n%s", a.c_str(), kUsage), 2;
    else o.inputs.push_back(a);
  }
  if (o.model.empty() || o.out.empty() || (o.inputs.empty() && o.list.empty() && o.engine.empty()) ||
      (o.device != "cpu" && o.device != "cuda") || (o.engine.empty() != o.crops.empty())) {
    std::fprintf(stderr, "error: missing or inconsistent arguments\n%s", kUsage);
    return 2;
  }
  try {
    return run(o);
  } catch (const e3dmm::Error& e) {
    // Typed library errors: the message names the file, field, expected and found.
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  }
}
