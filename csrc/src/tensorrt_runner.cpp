// TensorRT 10 runner: deserialize, one execution context, enqueueV3 on the caller's stream.
// Compiled only when CMake found TensorRT (E3DMM_WITH_TENSORRT); untested in CI, which has
// neither TensorRT nor a GPU. API used (TensorRT 10 C++, NvInferRuntime.h):
//   createInferRuntime(ILogger&), IRuntime::deserializeCudaEngine(void const*, size_t),
//   ICudaEngine::createExecutionContext(), getNbIOTensors(), getIOTensorName(int32_t),
//   getTensorIOMode/getTensorDataType/getTensorShape(char const*),
//   IExecutionContext::setInputShape(char const*, Dims const&), setTensorAddress(char const*, void*),
//   getTensorShape(char const*), enqueueV3(cudaStream_t). Objects are released with delete (10.x).
#include <NvInferRuntime.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <memory>
#include <vector>

#include "e3dmm/errors.h"
#include "e3dmm/limits.h"
#include "e3dmm/tensorrt_runner.h"

namespace e3dmm {
namespace {

// TensorRT reports through a logger; forward warnings and errors to stderr.
class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::fprintf(stderr, "[TensorRT] %s\n", msg);
  }
};

Logger& logger() {
  static Logger l;  // must outlive every runtime
  return l;
}

void cuda_check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw BackendError(std::string("TensorRTRunner: ") + what + " failed: " + cudaGetErrorString(err));
}

}  // namespace

bool tensorrt_compiled() { return true; }

struct TensorRTRunner::Impl {
  std::string path;
  std::unique_ptr<nvinfer1::IRuntime> runtime;
  std::unique_ptr<nvinfer1::ICudaEngine> engine;
  std::unique_ptr<nvinfer1::IExecutionContext> context;
  std::string input, output;
  int width = 0;
  float* out = nullptr;  // device [capacity, width]
  int64_t capacity = 0;

  ~Impl() {
    if (out) {
      cudaDeviceSynchronize();  // an enqueued run may still write it
      cudaFree(out);
    }
    context.reset();  // context before engine before runtime
    engine.reset();
    runtime.reset();
  }
};

TensorRTRunner::TensorRTRunner(const std::string& engine_path) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    // Creating a TensorRT runtime without a working driver can crash: check first.
    throw Unavailable("TensorRTRunner: no CUDA device is available (driver or GPU missing)");
  }
  auto m = std::make_unique<Impl>();
  m->path = engine_path;
  // stdio, not an ifstream: the library keeps clear of iostreams (see build_info.cpp).
  std::vector<char> blob;
  {
    std::FILE* fp = std::fopen(engine_path.c_str(), "rb");
    if (!fp) throw ModelFileError(engine_path + ": file: expected a readable TensorRT engine, found none");
    char buf[1 << 16];
    size_t got;
    while ((got = std::fread(buf, 1, sizeof buf, fp)) > 0) blob.insert(blob.end(), buf, buf + got);
    const bool failed = std::ferror(fp) != 0;
    std::fclose(fp);
    if (failed) throw ModelFileError(engine_path + ": file: read error while loading the TensorRT engine");
  }
  if (blob.empty()) throw ModelFileError(engine_path + ": file: expected a TensorRT engine, found an empty file");

  m->runtime.reset(nvinfer1::createInferRuntime(logger()));
  if (!m->runtime) throw BackendError("TensorRTRunner: createInferRuntime failed");
  m->engine.reset(m->runtime->deserializeCudaEngine(blob.data(), blob.size()));
  if (!m->engine)
    throw ModelFileError(engine_path +
                         ": engine: expected an engine built by this TensorRT version for this GPU, found one that "
                         "does not deserialize (rebuild it with the Python side; see the log above)");
  m->context.reset(m->engine->createExecutionContext());
  if (!m->context) throw BackendError("TensorRTRunner: createExecutionContext failed");

  const int32_t nio = m->engine->getNbIOTensors();
  for (int32_t i = 0; i < nio; ++i) {
    const char* name = m->engine->getIOTensorName(i);
    const bool is_input = m->engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
    if (m->engine->getTensorDataType(name) != nvinfer1::DataType::kFLOAT)
      throw ModelFileError(engine_path + ": tensor '" + name + "': expected float32 I/O, found another data type");
    std::string& slot = is_input ? m->input : m->output;
    if (!slot.empty())
      throw ModelFileError(engine_path + ": I/O tensors: expected one input and one output, found " +
                           std::to_string(nio) + " tensors");
    slot = name;
  }
  if (m->input.empty() || m->output.empty())
    throw ModelFileError(engine_path + ": I/O tensors: expected one input and one output, found " +
                         std::to_string(nio) + " tensors");
  const nvinfer1::Dims in = m->engine->getTensorShape(m->input.c_str());
  if (in.nbDims != 4 || in.d[1] != 3 || in.d[2] != 224 || in.d[3] != 224)
    throw ModelFileError(engine_path + ": input '" + m->input + "': expected shape [B, 3, 224, 224], found rank " +
                         std::to_string(in.nbDims));
  const nvinfer1::Dims out = m->engine->getTensorShape(m->output.c_str());
  if (out.nbDims != 2 || out.d[1] <= 0 || out.d[1] > kMaxCoeffStride)
    throw ModelFileError(engine_path + ": output '" + m->output + "': expected shape [B, C] with 1 <= C <= " +
                         std::to_string(kMaxCoeffStride) + ", found rank " + std::to_string(out.nbDims) +
                         (out.nbDims == 2 ? ", C " + std::to_string((int64_t)out.d[1]) : std::string()));
  m->width = (int)out.d[1];  // checked above: no narrowing
  impl_ = std::move(m);
}

TensorRTRunner::TensorRTRunner(TensorRTRunner&&) noexcept = default;
TensorRTRunner& TensorRTRunner::operator=(TensorRTRunner&&) noexcept = default;
TensorRTRunner::~TensorRTRunner() = default;

const std::string& TensorRTRunner::input_name() const { return impl_->input; }
const std::string& TensorRTRunner::output_name() const { return impl_->output; }
int TensorRTRunner::output_width() const { return impl_->width; }

const float* TensorRTRunner::run(const float* input, int64_t batch, void* stream) {
  Impl& m = *impl_;
  if (!input) throw InvalidInput("TensorRTRunner::run: input: expected a device pointer, found null");
  // Dims holds int32 in TensorRT 8: a larger batch would be narrowed before the profile check.
  if (batch < 1 || batch > INT32_MAX)
    throw InvalidInput("TensorRTRunner::run: batch: expected 1 to 2147483647, found " + std::to_string(batch));
  nvinfer1::Dims dims;
  dims.nbDims = 4;
  dims.d[0] = batch;
  dims.d[1] = 3;
  dims.d[2] = 224;
  dims.d[3] = 224;
  if (!m.context->setInputShape(m.input.c_str(), dims))
    throw InvalidInput("TensorRTRunner::run: batch: expected a size inside the engine's optimization profile, found " +
                       std::to_string(batch));
  if (batch > m.capacity) {
    // Grow the output buffer; wait for any run still writing the old one.
    if (m.out) {
      cuda_check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "cudaStreamSynchronize");
      cudaFree(m.out);
      m.out = nullptr;
    }
    cuda_check(cudaMalloc(reinterpret_cast<void**>(&m.out), sizeof(float) * (size_t)batch * m.width), "cudaMalloc");
    m.capacity = batch;
  }
  if (!m.context->setTensorAddress(m.input.c_str(), const_cast<float*>(input)) ||
      !m.context->setTensorAddress(m.output.c_str(), m.out))
    throw BackendError("TensorRTRunner::run: setTensorAddress failed");
  if (!m.context->enqueueV3(static_cast<cudaStream_t>(stream)))
    throw BackendError("TensorRTRunner::run: enqueueV3 failed (see the TensorRT log)");
  return m.out;
}

}  // namespace e3dmm
