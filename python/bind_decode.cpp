// Bindings of the decode kernels: numpy arrays for the CPU, integer device
// pointers and a stream handle for CUDA (so torch, CuPy or cuda-python buffers all work).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "bind_common.h"
#include "e3dmm/decode.h"
#include "e3dmm/limits.h"

namespace py = pybind11;
using bind::expect;

namespace {

// Fills DecodeParams from numpy arrays after checking every one of them.
e3dmm::DecodeParams host_params(const char* fn, const py::array& shape_mean, const py::array& shape_basis,
                                const py::array& tex_mean, const py::array& tex_basis, const py::array& coeffs,
                                int64_t shape_offset, int64_t tex_offset, const py::object& vertices,
                                const py::object& colors, const py::object& records, const py::object& expr_mean,
                                const py::object& expr_basis, const py::object& expression) {
  expect(fn, "shape_mean", shape_mean, 'f', 4, {-1}, "float32[3N], C-contiguous");
  const py::ssize_t n3 = shape_mean.shape(0);
  if (n3 == 0 || n3 % 3 != 0) bind::bad_arg(fn, "shape_mean", "float32[3N] with N >= 1", shape_mean);
  const py::ssize_t n = n3 / 3;
  const int itemsize = shape_basis.itemsize();
  if (shape_basis.dtype().kind() != 'f' || (itemsize != 4 && itemsize != 2))
    bind::bad_arg(fn, "shape_basis", "float32 or float16 [Ks, 3N]", shape_basis);
  const std::string bt = itemsize == 4 ? "float32" : "float16";
  expect(fn, "shape_basis", shape_basis, 'f', itemsize, {-1, n3}, bt + "[Ks, " + std::to_string(n3) + "], C-contiguous");
  expect(fn, "tex_mean", tex_mean, 'f', 4, {n3}, "float32[" + std::to_string(n3) + "], C-contiguous");
  expect(fn, "tex_basis", tex_basis, 'f', itemsize, {-1, n3},
         bt + "[Kt, " + std::to_string(n3) + "] (same dtype as shape_basis), C-contiguous");
  expect(fn, "coeffs", coeffs, 'f', 4, {-1, -1}, "float32[B, C], C-contiguous");
  const py::ssize_t b = coeffs.shape(0);
  if (b < 1) bind::bad_arg(fn, "coeffs", "float32[B, C] with B >= 1", coeffs);

  e3dmm::DecodeParams p;
  p.shape_basis = shape_basis.data();
  p.shape_mean = static_cast<const float*>(shape_mean.data());
  p.tex_basis = tex_basis.data();
  p.tex_mean = static_cast<const float*>(tex_mean.data());
  p.basis_type = itemsize == 4 ? e3dmm::BasisType::Float32 : e3dmm::BasisType::Float16;
  // Every dimension is range-checked before it is narrowed to DecodeParams' int fields;
  // validate() then checks them against each other.
  p.num_vertices = n;
  p.shape_components = bind::checked_int(fn, "shape_basis rows (Ks)", shape_basis.shape(0), 0, e3dmm::kMaxComponents);
  p.tex_components = bind::checked_int(fn, "tex_basis rows (Kt)", tex_basis.shape(0), 0, e3dmm::kMaxComponents);
  p.coeffs = static_cast<const float*>(coeffs.data());
  p.batch = b;
  p.coeff_stride = bind::checked_int(fn, "coeffs columns", coeffs.shape(1), 0, e3dmm::kMaxCoeffStride);
  p.shape_offset = bind::checked_int(fn, "shape_offset", shape_offset, 0, e3dmm::kMaxCoeffStride);
  p.tex_offset = bind::checked_int(fn, "tex_offset", tex_offset, 0, e3dmm::kMaxCoeffStride);
  const std::string bn = std::to_string(b) + ", " + std::to_string(n);
  if (!vertices.is_none()) {
    py::array v = vertices.cast<py::array>();
    expect(fn, "vertices", v, 'f', 4, {b, n, 3}, "float32[" + bn + ", 3], C-contiguous", true);
    p.vertices = static_cast<float*>(v.mutable_data());
  }
  if (!colors.is_none()) {
    py::array c = colors.cast<py::array>();
    expect(fn, "colors", c, 'u', 1, {b, n, 3}, "uint8[" + bn + ", 3], C-contiguous", true);
    p.colors = static_cast<uint8_t*>(c.mutable_data());
  }
  if (!records.is_none()) {
    py::array r = records.cast<py::array>();
    // Either the structured PLY vertex dtype (itemsize 15) [B, N] or raw bytes uint8[B, N, 15].
    const bool structured = r.itemsize() == e3dmm::kRecordBytes && r.ndim() == 2 && r.shape(0) == b &&
                            r.shape(1) == n && (r.flags() & py::array::c_style);
    if (!structured)
      expect(fn, "records", r, 'u', 1, {b, n, e3dmm::kRecordBytes},
             "[" + bn + "] of the 15-byte PLY vertex dtype or uint8[" + bn + ", 15], C-contiguous", true);
    if (!r.writeable()) throw e3dmm::InvalidInput(std::string(fn) + ": records: expected a writable array");
    p.records = static_cast<uint8_t*>(r.mutable_data());
  }
  // The optional expression term: all three arrays, or none.
  const int given = !expr_mean.is_none() + !expr_basis.is_none() + !expression.is_none();
  if (given != 0 && given != 3)
    throw e3dmm::InvalidInput(std::string(fn) + ": expr_mean/expr_basis/expression: expected all three (the "
                              "expression term) or none, found " + std::to_string(given));
  if (given == 3) {
    py::array em = expr_mean.cast<py::array>(), eb = expr_basis.cast<py::array>(), e = expression.cast<py::array>();
    expect(fn, "expr_mean", em, 'f', 4, {n3}, "float32[" + std::to_string(n3) + "], C-contiguous");
    expect(fn, "expr_basis", eb, 'f', itemsize, {-1, n3},
           bt + "[Ke, " + std::to_string(n3) + "] (same dtype as shape_basis), C-contiguous");
    const int ke = bind::checked_int(fn, "expr_basis rows (Ke)", eb.shape(0), 1, e3dmm::kMaxComponents);
    expect(fn, "expression", e, 'f', 4, {b, ke},
           "float32[" + std::to_string(b) + ", " + std::to_string(ke) + "] (a row of weights per coefficient row), "
           "C-contiguous");
    p.expr_mean = static_cast<const float*>(em.data());
    p.expr_basis = eb.data();
    p.expr_components = ke;
    p.expr_coeffs = static_cast<const float*>(e.data());
  }
  return p;
}

}  // namespace

void bind_decode(py::module_& m) {
  m.def(
      "decode_cpu",
      [](py::array shape_mean, py::array shape_basis, py::array tex_mean, py::array tex_basis, py::array coeffs,
         int64_t shape_offset, int64_t tex_offset, py::object vertices, py::object colors, py::object records,
         int64_t num_threads, py::object expr_mean, py::object expr_basis, py::object expression) {
        auto p = host_params("decode_cpu", shape_mean, shape_basis, tex_mean, tex_basis, coeffs, shape_offset,
                             tex_offset, vertices, colors, records, expr_mean, expr_basis, expression);
        const int threads = bind::checked_int("decode_cpu", "num_threads", num_threads, 0, 1 << 16);
        py::gil_scoped_release nogil;
        e3dmm::decode_cpu(p, threads);
      },
      py::arg("shape_mean"), py::arg("shape_basis"), py::arg("tex_mean"), py::arg("tex_basis"), py::arg("coeffs"),
      py::arg("shape_offset"), py::arg("tex_offset"), py::arg("vertices") = py::none(),
      py::arg("colors") = py::none(), py::arg("records") = py::none(), py::arg("num_threads") = 0,
      py::arg("expr_mean") = py::none(), py::arg("expr_basis") = py::none(), py::arg("expression") = py::none(),
      "Decode coefficient rows on the CPU into the given output arrays; with expr_mean [3N], expr_basis "
      "[Ke, 3N] and expression [B, Ke] the shape gains the expression term.");

  m.def(
      "decode_cuda_body_on_host",
      [](py::array shape_mean, py::array shape_basis, py::array tex_mean, py::array tex_basis, py::array coeffs,
         int64_t shape_offset, int64_t tex_offset, py::object vertices, py::object colors, py::object records,
         py::object expr_mean, py::object expr_basis, py::object expression) {
        auto p = host_params("decode_cuda_body_on_host", shape_mean, shape_basis, tex_mean, tex_basis, coeffs,
                             shape_offset, tex_offset, vertices, colors, records, expr_mean, expr_basis, expression);
        py::gil_scoped_release nogil;
        e3dmm::decode_cuda_body_on_host(p);
      },
      py::arg("shape_mean"), py::arg("shape_basis"), py::arg("tex_mean"), py::arg("tex_basis"), py::arg("coeffs"),
      py::arg("shape_offset"), py::arg("tex_offset"), py::arg("vertices") = py::none(),
      py::arg("colors") = py::none(), py::arg("records") = py::none(), py::arg("expr_mean") = py::none(),
      py::arg("expr_basis") = py::none(), py::arg("expression") = py::none(),
      "Run the CUDA kernel's per-thread body on the CPU over the whole index space (for tests).");

  m.def(
      "decode_cuda",
      [](uintptr_t shape_mean, uintptr_t shape_basis, uintptr_t tex_mean, uintptr_t tex_basis, int64_t basis_type,
         int64_t num_vertices, int64_t shape_components, int64_t tex_components, uintptr_t coeffs, int64_t batch,
         int64_t coeff_stride, int64_t shape_offset, int64_t tex_offset, uintptr_t vertices, uintptr_t colors,
         uintptr_t records, uintptr_t stream, uintptr_t nonfinite_flag, uintptr_t expr_mean, uintptr_t expr_basis,
         int64_t expr_components, uintptr_t expression) {
        const char* fn = "decode_cuda";
        e3dmm::DecodeParams p;
        p.shape_mean = reinterpret_cast<const float*>(shape_mean);
        p.shape_basis = reinterpret_cast<const void*>(shape_basis);
        p.tex_mean = reinterpret_cast<const float*>(tex_mean);
        p.tex_basis = reinterpret_cast<const void*>(tex_basis);
        p.basis_type = static_cast<e3dmm::BasisType>(bind::checked_int(fn, "basis_type", basis_type, 1, 2));
        p.num_vertices = num_vertices;
        p.shape_components = bind::checked_int(fn, "shape_components", shape_components, 0, e3dmm::kMaxComponents);
        p.tex_components = bind::checked_int(fn, "tex_components", tex_components, 0, e3dmm::kMaxComponents);
        p.coeffs = reinterpret_cast<const float*>(coeffs);
        p.batch = batch;
        p.coeff_stride = bind::checked_int(fn, "coeff_stride", coeff_stride, 0, e3dmm::kMaxCoeffStride);
        p.shape_offset = bind::checked_int(fn, "shape_offset", shape_offset, 0, e3dmm::kMaxCoeffStride);
        p.tex_offset = bind::checked_int(fn, "tex_offset", tex_offset, 0, e3dmm::kMaxCoeffStride);
        p.vertices = reinterpret_cast<float*>(vertices);
        p.colors = reinterpret_cast<uint8_t*>(colors);
        p.records = reinterpret_cast<uint8_t*>(records);
        p.expr_mean = reinterpret_cast<const float*>(expr_mean);
        p.expr_basis = reinterpret_cast<const void*>(expr_basis);
        p.expr_components = bind::checked_int(fn, "expr_components", expr_components, 0, e3dmm::kMaxComponents);
        p.expr_coeffs = reinterpret_cast<const float*>(expression);
        py::gil_scoped_release nogil;
        e3dmm::decode_cuda(p, reinterpret_cast<void*>(stream), reinterpret_cast<int*>(nonfinite_flag));
      },
      py::arg("shape_mean"), py::arg("shape_basis"), py::arg("tex_mean"), py::arg("tex_basis"),
      py::arg("basis_type"), py::arg("num_vertices"), py::arg("shape_components"), py::arg("tex_components"),
      py::arg("coeffs"), py::arg("batch"), py::arg("coeff_stride"), py::arg("shape_offset"), py::arg("tex_offset"),
      py::arg("vertices"), py::arg("colors"), py::arg("records"), py::arg("stream"), py::arg("nonfinite_flag"),
      py::arg("expr_mean") = 0, py::arg("expr_basis") = 0, py::arg("expr_components") = 0, py::arg("expression") = 0,
      "Launch the CUDA decode kernel on device pointers (integers; 0 = none) and a cudaStream_t (integer); "
      "with expression [B, Ke] (device) the shape gains the expression term of expr_mean and expr_basis.");
}
