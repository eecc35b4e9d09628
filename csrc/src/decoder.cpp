// Decoder (CPU) and CudaDecoder (GPU): thin owners of a model around the decode kernels.
#include <cstring>
#include <vector>

#include "e3dmm/decoder.h"
#include "e3dmm/errors.h"
#include "ply_internal.h"

#if defined(E3DMM_WITH_CUDA)
#include <cuda_runtime.h>
#endif

namespace e3dmm {

// ---------------------------------------------------------------- CPU

struct Decoder::Impl {
  MorphableModel model;
  BasisType basis;
  int num_threads;
  // The model's faces as a binary PLY face block, built once: each write_ply() then
  // costs only the header, the records and this block (1.2 MB for the BFM topology).
  std::vector<uint8_t> face_block;
};

Decoder::Decoder(MorphableModel model, BasisType basis, int num_threads) {
  if (basis != BasisType::Float32 && basis != BasisType::Float16)
    throw InvalidInput("Decoder: basis: expected Float32 or Float16, found " + std::to_string((int)basis));
  if (basis == BasisType::Float16) model.make_float16_bases();
  std::vector<uint8_t> fb = ply_internal::binary_face_block("Decoder", model.faces(), model.num_faces(),
                                                            model.num_vertices());
  impl_.reset(new Impl{std::move(model), basis, num_threads, std::move(fb)});
}

Decoder Decoder::load(const std::string& path, BasisType basis, int num_threads) {
  return Decoder(MorphableModel::load(path), basis, num_threads);
}

Decoder::Decoder(Decoder&&) noexcept = default;
Decoder& Decoder::operator=(Decoder&&) noexcept = default;
Decoder::~Decoder() = default;

const MorphableModel& Decoder::model() const { return impl_->model; }

namespace {

void require_expression_basis(const char* fn, int components, const float* expression) {
  if (expression && components == 0)
    throw InvalidInput(std::string(fn) + ": expression: expected none, the model has no expression basis; "
                       "found expression weights");
}

}  // namespace

void Decoder::decode(const float* coeffs, int64_t batch, const CoeffLayout& layout, float* vertices,
                     uint8_t* colors, uint8_t* records, const float* expression) const {
  DecodeParams p = impl_->model.decode_params(coeffs, batch, layout, impl_->basis);
  require_expression_basis("Decoder::decode", p.expr_components, expression);
  p.vertices = vertices;
  p.colors = colors;
  p.records = records;
  p.expr_coeffs = expression;
  decode_cpu(p, impl_->num_threads);  // validates everything, including non-finite coefficients
}

void Decoder::decode(const float* coeffs, int64_t batch, float* vertices, uint8_t* colors,
                     uint8_t* records, const float* expression) const {
  decode(coeffs, batch, impl_->model.default_layout(), vertices, colors, records, expression);
}

void Decoder::write_ply(const std::string& path, const uint8_t* records, PlyFormat format,
                        const std::vector<std::string>& comments) const {
  const MorphableModel& m = impl_->model;
  if (format == PlyFormat::BinaryLittleEndian)
    ply_internal::write_binary_prebuilt("write_ply", path, records, m.num_vertices(), impl_->face_block, comments);
  else
    e3dmm::write_ply(path, records, m.num_vertices(), m.faces(), m.num_faces(), format, comments);
}

void Decoder::decode_to_ply(const float* coeffs_row, const std::string& path, PlyFormat format,
                            const std::vector<std::string>& comments) const {
  const MorphableModel& m = impl_->model;
  std::vector<uint8_t> records((size_t)m.num_vertices() * kRecordBytes);
  decode(coeffs_row, 1, nullptr, nullptr, records.data());
  write_ply(path, records.data(), format, comments);
}

// ---------------------------------------------------------------- CUDA

#if defined(E3DMM_WITH_CUDA)

namespace {

void cuda_check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw BackendError(std::string("CudaDecoder: ") + what + " failed: " + cudaGetErrorString(err));
}

}  // namespace

struct CudaDecoder::Impl {
  // The model's decode parameters with every model pointer replaced by its device copy;
  // each decode() copies this and fills in the per-call coefficients and outputs.
  DecodeParams params;
  int* flag = nullptr;  // device int, set by the kernel on a non-finite coefficient

  ~Impl() {
    // Frees may not be reordered before kernels still reading the buffers.
    if (params.shape_basis || params.tex_basis || params.shape_mean || params.tex_mean || params.expr_basis ||
        params.expr_mean || flag)
      cudaDeviceSynchronize();
    cudaFree(const_cast<void*>(params.shape_basis));
    cudaFree(const_cast<void*>(params.tex_basis));
    cudaFree(const_cast<float*>(params.shape_mean));
    cudaFree(const_cast<float*>(params.tex_mean));
    cudaFree(const_cast<void*>(params.expr_basis));
    cudaFree(const_cast<float*>(params.expr_mean));
    cudaFree(flag);
  }
  template <typename T>
  T* upload(const T* src, size_t bytes, const char* what) {
    void* d = nullptr;
    cuda_check(cudaMalloc(&d, bytes ? bytes : 1), what);
    if (bytes) {
      cudaError_t e = cudaMemcpy(d, src, bytes, cudaMemcpyHostToDevice);
      if (e != cudaSuccess) {
        cudaFree(d);
        cuda_check(e, what);
      }
    }
    return static_cast<T*>(d);
  }
};

CudaDecoder::CudaDecoder(const MorphableModel& model, BasisType basis) {
  if (cuda_device_count() == 0) throw Unavailable("CudaDecoder: no CUDA device is available (driver or GPU missing)");
  if (basis != BasisType::Float32 && basis != BasisType::Float16)
    throw InvalidInput("CudaDecoder: basis: expected Float32 or Float16, found " + std::to_string((int)basis));
  if (basis == BasisType::Float16 && !model.has_float16_bases())
    throw InvalidInput("CudaDecoder: basis: Float16 needs model.make_float16_bases() first, found none");
  auto m = std::make_unique<Impl>();
  const DecodeParams host = model.decode_params(nullptr, 1, model.default_layout(), basis);
  const size_t n3 = (size_t)(3 * host.num_vertices);
  const size_t item = basis == BasisType::Float16 ? 2 : 4;
  m->params = host;
  m->params.shape_basis = nullptr;  // until uploaded: ~Impl frees only device pointers
  m->params.tex_basis = nullptr;
  m->params.shape_mean = nullptr;
  m->params.tex_mean = nullptr;
  m->params.expr_basis = nullptr;
  m->params.expr_mean = nullptr;
  m->params.shape_basis = m->upload<void>(host.shape_basis, item * n3 * host.shape_components, "upload shape_basis");
  m->params.tex_basis = m->upload<void>(host.tex_basis, item * n3 * host.tex_components, "upload tex_basis");
  m->params.shape_mean = m->upload<float>(host.shape_mean, 4 * n3, "upload shape_mean");
  m->params.tex_mean = m->upload<float>(host.tex_mean, 4 * n3, "upload tex_mean");
  if (host.expr_components > 0) {
    m->params.expr_basis = m->upload<void>(host.expr_basis, item * n3 * host.expr_components, "upload expression_basis");
    m->params.expr_mean = m->upload<float>(host.expr_mean, 4 * n3, "upload expression_mean");
  }
  cuda_check(cudaMalloc(reinterpret_cast<void**>(&m->flag), sizeof(int)), "cudaMalloc(flag)");
  cuda_check(cudaMemset(m->flag, 0, sizeof(int)), "cudaMemset(flag)");
  impl_ = std::move(m);
}

int64_t CudaDecoder::num_vertices() const { return impl_->params.num_vertices; }

CoeffLayout CudaDecoder::default_layout() const {
  CoeffLayout l;
  l.stride = impl_->params.shape_components + impl_->params.tex_components;
  l.shape_offset = 0;
  l.tex_offset = impl_->params.shape_components;
  return l;
}

void CudaDecoder::decode(const float* coeffs, int64_t batch, const CoeffLayout& layout, float* vertices,
                         uint8_t* colors, uint8_t* records, void* stream, const float* expression) {
  DecodeParams p = impl_->params;
  require_expression_basis("CudaDecoder::decode", p.expr_components, expression);
  p.expr_coeffs = expression;
  p.coeffs = coeffs;
  p.batch = batch;
  p.coeff_stride = layout.stride;
  p.shape_offset = layout.shape_offset;
  p.tex_offset = layout.tex_offset;
  p.vertices = vertices;
  p.colors = colors;
  p.records = records;
  decode_cuda(p, stream, impl_->flag);
}

void CudaDecoder::synchronize(void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  int flag = 0;
  cuda_check(cudaMemcpyAsync(&flag, impl_->flag, sizeof(int), cudaMemcpyDeviceToHost, s), "read non-finite flag");
  cuda_check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  if (flag) {
    cuda_check(cudaMemsetAsync(impl_->flag, 0, sizeof(int), s), "reset non-finite flag");
    cuda_check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
    throw InvalidInput("CudaDecoder: coeffs: expected finite numbers (coefficients and expression weights), found "
                       "NaN or Inf in a decoded batch");
  }
}

#else  // no CUDA in this build

struct CudaDecoder::Impl {};

CudaDecoder::CudaDecoder(const MorphableModel&, BasisType) {
  throw Unavailable("CudaDecoder: this build has no CUDA kernel; reconfigure with nvcc on PATH (-DENGINE_WITH_CUDA=ON)");
}
int64_t CudaDecoder::num_vertices() const { return 0; }
CoeffLayout CudaDecoder::default_layout() const { return CoeffLayout{}; }
void CudaDecoder::decode(const float*, int64_t, const CoeffLayout&, float*, uint8_t*, uint8_t*, void*, const float*) {
  throw Unavailable("CudaDecoder: this build has no CUDA kernel");
}
void CudaDecoder::synchronize(void*) { throw Unavailable("CudaDecoder: this build has no CUDA kernel"); }

#endif

CudaDecoder::CudaDecoder(CudaDecoder&&) noexcept = default;
CudaDecoder& CudaDecoder::operator=(CudaDecoder&&) noexcept = default;
CudaDecoder::~CudaDecoder() = default;

}  // namespace e3dmm
