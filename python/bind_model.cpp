// Binding of the C++ cache reader, MorphableModel::load, for tests and diagnostics: the
// Python package reads caches with its own reader (engine.morphable.cache); this one lets
// tests hold both readers to the same verdict on the same file
// (tests/morphable/test_cache_differential.py, tests/fuzz/targets/fuzz_cache.py).
#include <pybind11/pybind11.h>

#include <string>

#include "e3dmm/model.h"

namespace py = pybind11;

void bind_model(py::module_& m) {
  m.def(
      "load_cache_summary",
      [](const std::string& path) {
        // Mapping and validating a full-size model reads ~100 MB: without the GIL.
        auto model = [&] {
          py::gil_scoped_release nogil;
          return e3dmm::MorphableModel::load(path);
        }();
        py::dict d;
        d["num_vertices"] = model.num_vertices();
        d["num_faces"] = model.num_faces();
        d["shape_components"] = model.shape_components();
        d["tex_components"] = model.tex_components();
        d["num_landmarks"] = model.num_landmarks();
        d["has_landmarks_outer"] = model.landmarks_outer() != nullptr;
        d["expression_components"] = model.expression_components();
        d["synthetic"] = model.synthetic();
        d["name"] = model.name();
        d["metadata_json"] = py::bytes(model.metadata_json());
        return d;
      },
      py::arg("path"),
      "Load a .e3dmm cache with the C++ reader (e3dmm::MorphableModel::load) and return its sizes "
      "(num_vertices, num_faces, shape_components, tex_components, num_landmarks, has_landmarks_outer, "
      "expression_components), synthetic, name and "
      "the metadata bytes; raises engine.errors.ModelFileError as the Python reader does.");
}
