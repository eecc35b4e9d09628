// engine._C: the pybind11 module. Bindings only convert, check and call into csrc/.
#include <pybind11/pybind11.h>

#include "bind_common.h"
#include "e3dmm/decode.h"
#include "e3dmm/errors.h"
#include "e3dmm/limits.h"

namespace py = pybind11;

void bind_decode(py::module_& m);
void bind_model(py::module_& m);
void bind_raster(py::module_& m);
void bind_crop(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "Compiled core of the 3DMM-CNN engine (decode, crop and raster kernels, the C++ cache reader). Use the engine package, not this module.";

  // Map the library's typed C++ errors onto engine.errors. The class objects are
  // deliberately leaked: they must outlive every translator call, even at shutdown.
  py::module_ errors = py::module_::import("engine.errors");
  static py::object* input_error = new py::object(errors.attr("InputError"));
  static py::object* model_error = new py::object(errors.attr("ModelFileError"));
  static py::object* backend_error = new py::object(errors.attr("BackendError"));
  static py::object* unavailable_error = new py::object(errors.attr("UnavailableError"));
  static py::object* engine_error = new py::object(errors.attr("EngineError"));
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const e3dmm::InvalidInput& e) {
      PyErr_SetString(input_error->ptr(), e.what());
    } catch (const e3dmm::ModelFileError& e) {
      PyErr_SetString(model_error->ptr(), e.what());
    } catch (const e3dmm::BackendError& e) {
      PyErr_SetString(backend_error->ptr(), e.what());
    } catch (const e3dmm::Unavailable& e) {
      PyErr_SetString(unavailable_error->ptr(), e.what());
    } catch (const e3dmm::Error& e) {
      PyErr_SetString(engine_error->ptr(), e.what());
    }
  });

  m.def("build_info_json", &e3dmm::build_info_json, "JSON description of how the core was compiled.");
  m.def("cuda_compiled", &e3dmm::cuda_compiled, "True when the CUDA kernel was compiled in.");
  m.def("cuda_device_count", &e3dmm::cuda_device_count, "Usable CUDA devices (0 without driver or GPU).");
  m.def("cpu_kernel_isa", &e3dmm::cpu_kernel_isa, "The CPU kernel chosen on this machine.");
  m.attr("RECORD_BYTES") = e3dmm::kRecordBytes;
  // The bounds of csrc/include/e3dmm/limits.h, so tests can hold them equal to engine/morphable/model.py's.
  py::dict limits;
  limits["max_vertices"] = e3dmm::kMaxVertices;
  limits["max_components"] = e3dmm::kMaxComponents;
  limits["max_faces"] = e3dmm::kMaxFaces;
  limits["max_landmarks"] = e3dmm::kMaxLandmarks;
  m.attr("LIMITS") = limits;

  bind_decode(m);
  bind_model(m);
  bind_raster(m);
  bind_crop(m);
}
