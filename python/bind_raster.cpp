// Binding of the z-buffer rasteriser (csrc/include/e3dmm/raster.h). Checks and converts;
// the library checks again (sizes, finite vertices, indices) before it draws anything.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "bind_common.h"
#include "e3dmm/errors.h"
#include "e3dmm/raster.h"

namespace py = pybind11;
using bind::expect;

namespace {

// A double narrowed to float only when it is representable (the plain conversion of an
// out-of-range double is undefined behaviour); NaN passes through for validate() to name.
float checked_float(const char* name, double v) {
  if (std::isfinite(v) && std::fabs(v) > (double)std::numeric_limits<float>::max())
    throw e3dmm::InvalidInput(std::string("rasterize: ") + name + ": expected a float32 number, found " +
                              std::to_string(v));
  return (float)v;
}

}  // namespace

void bind_raster(py::module_& m) {
  m.def(
      "rasterize",
      [](py::array vertices, py::array faces, py::object colors, int64_t width, int64_t height, double light_x,
         double light_y, double light_z, double ambient, py::object rgb, int64_t num_threads) {
        const char* fn = "rasterize";
        expect(fn, "vertices", vertices, 'f', 4, {-1, 3}, "float32[N, 3], C-contiguous");
        expect(fn, "faces", faces, 'i', 4, {-1, 3}, "int32[F, 3], C-contiguous");
        const py::ssize_t n = vertices.shape(0);
        e3dmm::RasterParams p;
        p.vertices = static_cast<const float*>(vertices.data());
        p.num_vertices = n;
        p.faces = static_cast<const int32_t*>(faces.data());
        p.num_faces = faces.shape(0);
        py::array colors_arr;
        if (!colors.is_none()) {
          colors_arr = colors.cast<py::array>();
          expect(fn, "colors", colors_arr, 'u', 1, {n, 3}, "uint8[" + std::to_string(n) + ", 3], C-contiguous");
          p.colors = static_cast<const uint8_t*>(colors_arr.data());
        }
        p.width = width;
        p.height = height;
        p.light[0] = checked_float("light[0]", light_x);
        p.light[1] = checked_float("light[1]", light_y);
        p.light[2] = checked_float("light[2]", light_z);
        p.ambient = checked_float("ambient", ambient);
        const int threads = bind::checked_int(fn, "num_threads", num_threads, 0, 1 << 16);
        e3dmm::validate(p);  // sizes first: the outputs below are allocated only for a valid size

        const py::ssize_t h = (py::ssize_t)height, w = (py::ssize_t)width;
        py::array_t<uint8_t> out_rgb;
        if (rgb.is_none()) {
          out_rgb = py::array_t<uint8_t>({h, w, (py::ssize_t)3});
          std::memset(out_rgb.mutable_data(), 0, (size_t)(h * w * 3));
        } else {
          py::array given = rgb.cast<py::array>();
          const std::string hw = std::to_string(h) + ", " + std::to_string(w);
          expect(fn, "rgb", given, 'u', 1, {h, w, 3}, "uint8[" + hw + ", 3] (width x height), C-contiguous", true);
          out_rgb = py::reinterpret_borrow<py::array_t<uint8_t>>(given);
        }
        py::array_t<bool> mask({h, w});
        py::array_t<float> depth({h, w});
        py::array_t<int32_t> triangle({h, w});
        p.rgb = out_rgb.mutable_data();
        p.mask = reinterpret_cast<uint8_t*>(mask.mutable_data());  // written 0 or 1: valid bool bytes
        p.depth = depth.mutable_data();
        p.triangle = triangle.mutable_data();
        {
          py::gil_scoped_release nogil;
          e3dmm::rasterize(p, threads);
        }
        return py::make_tuple(out_rgb, mask, depth, triangle);
      },
      py::arg("vertices"), py::arg("faces"), py::arg("colors"), py::arg("width"), py::arg("height"),
      py::arg("light_x") = 0.0, py::arg("light_y") = 0.0, py::arg("light_z") = -1.0, py::arg("ambient") = 0.3,
      py::arg("rgb") = py::none(), py::arg("num_threads") = 0,
      "Z-buffer rasterise a mesh in image coordinates (raster.h): returns (rgb uint8[H, W, 3], "
      "mask bool[H, W], depth float32[H, W], triangle int32[H, W]). `rgb`, when given, is drawn into in place.");
  m.attr("RASTER_LIMITS") = py::dict(py::arg("max_side") = e3dmm::kMaxRasterSide,
                                     py::arg("max_pixels") = e3dmm::kMaxRasterPixels,
                                     py::arg("max_work") = e3dmm::kMaxRasterWork);
}
