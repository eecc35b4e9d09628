// Binding of the crop kernels (csrc/include/e3dmm/crop.h): numpy images for the CPU, integer device
// pointers and a stream handle for CUDA (torch, CuPy or nvJPEG buffers all work). Checks and
// converts; the library's validate() checks every size, stride and bound again.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "bind_common.h"
#include "e3dmm/crop.h"
#include "e3dmm/errors.h"

namespace py = pybind11;
using bind::expect;

namespace {

// "uint8[512, 512, 3]": an array's dtype and shape (bind::describe without its contiguity note).
std::string dtype_shape(const py::array& a) {
  const std::string d = bind::describe(a);
  return d.substr(0, d.find(" ("));
}

// bounds: int64[B, 4] (left, top, right, bottom), C-contiguous, as engine.crop.crop_bounds gives.
const int64_t* bounds_rows(const char* fn, const py::array& bounds, py::ssize_t b) {
  expect(fn, "bounds", bounds, 'i', 8, {b, 4},
         "int64[" + std::to_string(b) + ", 4] (bl, bt, br, bb per face: engine.crop.crop_bounds), C-contiguous");
  return static_cast<const int64_t*>(bounds.data());
}

// The name of bounds[b][k] in messages ("bounds[3][2] (br)"); "" for an argument that is not a bound.
std::string bound_name(e3dmm::CropArg arg, int64_t b) {
  const char* k = arg == e3dmm::CropArg::Left ? "[0] (bl)" : arg == e3dmm::CropArg::Top ? "[1] (bt)"
                  : arg == e3dmm::CropArg::Right ? "[2] (br)" : arg == e3dmm::CropArg::Bottom ? "[3] (bb)" : nullptr;
  return k ? "bounds[" + std::to_string(b) + "]" + k : std::string();
}

// How the library's messages name crop_batch_cpu's arguments: images[b] (an array whose shape and
// strides, in bytes = elements, give the face's height, width and strides) and bounds[b][k].
e3dmm::CropNaming cpu_naming(bool hwc) {
  e3dmm::CropNaming n;
  n.function = "crop_batch_cpu";
  n.name = [hwc](e3dmm::CropArg arg, int64_t b) -> std::string {
    using A = e3dmm::CropArg;
    const std::string bound = bound_name(arg, b), img = "images[" + std::to_string(b) + "]";
    const int yax = hwc ? 0 : 1, xax = hwc ? 1 : 2, cax = hwc ? 2 : 0;
    switch (arg) {
      case A::Batch: case A::Faces: return "images (B)";
      case A::Size: return "size";
      case A::OutType: return "out (dtype)";
      case A::Out: return "out";
      case A::Image: return img;
      case A::Height: return img + ".shape[" + std::to_string(yax) + "] (height)";
      case A::Width: return img + ".shape[" + std::to_string(xax) + "] (width)";
      case A::StrideY: return img + ".strides[" + std::to_string(yax) + "] (stride_y)";
      case A::StrideX: return img + ".strides[" + std::to_string(xax) + "] (stride_x)";
      case A::StrideC: return img + ".strides[" + std::to_string(cax) + "] (stride_c)";
      case A::Strides: return img + ".strides";
      default: return bound;
    }
  };
  return n;
}

// How they name crop_batch_cuda's: sources[b].<field> (its tuples) and bounds[b][k].
e3dmm::CropNaming cuda_naming() {
  e3dmm::CropNaming n;
  n.function = "crop_batch_cuda";
  n.name = [](e3dmm::CropArg arg, int64_t b) -> std::string {
    using A = e3dmm::CropArg;
    const std::string bound = bound_name(arg, b), src = "sources[" + std::to_string(b) + "]";
    switch (arg) {
      case A::Batch: case A::Faces: return "sources (B)";
      case A::Size: return "size";
      case A::OutType: return "out_dtype";
      case A::Out: return "out_ptr";
      case A::Image: return src + ".device_ptr";
      case A::Height: return src + ".height";
      case A::Width: return src + ".width";
      case A::StrideY: return src + ".stride_y";
      case A::StrideX: return src + ".stride_x";
      case A::StrideC: return src + ".stride_c";
      case A::Strides: return src + " strides (stride_y, stride_x, stride_c)";
      default: return bound;
    }
  };
  return n;
}

void set_bounds(e3dmm::CropFace& f, const int64_t* row) {
  f.left = row[0];
  f.top = row[1];
  f.right = row[2];
  f.bottom = row[3];
}

}  // namespace

void bind_crop(py::module_& m) {
  m.def(
      "crop_cpu",
      [](py::list images, py::array bounds, int64_t size, const std::string& layout, py::object out,
         int64_t num_threads) {
        const char* fn = "crop_batch_cpu";
        const bool hwc = layout == "hwc";
        if (!hwc && layout != "chw")
          throw e3dmm::InvalidInput(std::string(fn) + ": layout: expected \"hwc\" ([H, W, 3]) or \"chw\" ([3, H, W]), "
                                    "found \"" + layout + "\"");
        const py::ssize_t b = (py::ssize_t)images.size();
        // validate() checks B too, but only after `out` is allocated below: B x 3 x size^2 floats.
        if (b > e3dmm::kMaxCropBatch)
          throw e3dmm::InvalidInput(std::string(fn) + ": images (B): expected a number of faces in [0, " +
                                    std::to_string(e3dmm::kMaxCropBatch) + "], found " + std::to_string(b));
        const int64_t* rows = bounds_rows(fn, bounds, b);
        const int s = bind::checked_int(fn, "size", size, 1, e3dmm::kMaxCropSize);
        const int threads = bind::checked_int(fn, "num_threads", num_threads, 0, 1 << 16);
        const char* shape = hwc ? "uint8 [H, W, 3] RGB (layout \"hwc\")" : "uint8 [3, H, W] RGB (layout \"chw\")";
        // Strides are honoured (in elements = bytes for uint8), so views (a region, a flipped
        // image, a channel-last tensor seen as CHW) need no copy.
        std::vector<py::array> keep;  // the arrays stay referenced while the GIL is released
        keep.reserve((size_t)b);
        std::vector<e3dmm::CropFace> faces((size_t)b);
        for (py::ssize_t i = 0; i < b; ++i) {
          const std::string name = "images[" + std::to_string(i) + "]";
          py::handle h = images[(size_t)i];
          if (!py::isinstance<py::array>(h))
            throw e3dmm::InvalidInput(std::string(fn) + ": " + name + ": expected a numpy array " + shape + ", found " +
                                      std::string(py::str(py::type::of(h).attr("__name__"))));
          py::array a = py::reinterpret_borrow<py::array>(h);
          const int cax = hwc ? 2 : 0, yax = hwc ? 0 : 1, xax = hwc ? 1 : 2;
          const bool ok = a.dtype().kind() == 'u' && a.itemsize() == 1 && a.ndim() == 3 && a.shape(cax) == 3 &&
                          a.shape(yax) >= 1 && a.shape(xax) >= 1;
          if (!ok)  // its dtype and shape only: an image may have any strides
            throw e3dmm::InvalidInput(std::string(fn) + ": " + name + ": expected a non-empty " + shape + ", found " +
                                      dtype_shape(a));
          e3dmm::CropFace& f = faces[(size_t)i];
          f.image = static_cast<const uint8_t*>(a.data());
          f.height = a.shape(yax);
          f.width = a.shape(xax);
          f.stride_y = a.strides(yax);
          f.stride_x = a.strides(xax);
          f.stride_c = a.strides(cax);
          set_bounds(f, rows + 4 * i);
          keep.push_back(std::move(a));
        }
        py::array_t<float> result;
        if (out.is_none()) {
          result = py::array_t<float>({b, (py::ssize_t)3, (py::ssize_t)s, (py::ssize_t)s});
        } else {
          py::array given = out.cast<py::array>();
          const std::string dims = std::to_string(b) + ", 3, " + std::to_string(s) + ", " + std::to_string(s);
          expect(fn, "out", given, 'f', 4, {b, 3, s, s}, "float32[" + dims + "], C-contiguous", true);
          result = py::reinterpret_borrow<py::array_t<float>>(given);
        }
        const e3dmm::CropNaming naming = cpu_naming(hwc);
        e3dmm::CropParams p;
        p.faces = faces.data();
        p.batch = b;
        p.size = s;
        p.out = b > 0 ? static_cast<void*>(result.mutable_data()) : nullptr;
        p.out_type = e3dmm::CropOutType::Float32;
        p.naming = &naming;
        {
          py::gil_scoped_release nogil;
          e3dmm::crop_cpu(p, threads);
        }
        return result;
      },
      py::arg("images"), py::arg("bounds"), py::arg("size"), py::arg("layout"), py::arg("out") = py::none(),
      py::arg("num_threads") = 0,
      "Crop B faces on the CPU (crop.h): images a list of B uint8 RGB arrays ([H, W, 3] for layout 'hwc', "
      "[3, H, W] for 'chw'; any strides), bounds int64[B, 4]; returns float32[B, 3, size, size] planar BGR 0..255.");

  m.def(
      "crop_cuda",
      [](py::array sources, py::array bounds, uintptr_t out, int64_t size, int64_t out_type, uintptr_t stream) {
        const char* fn = "crop_batch_cuda";
        expect(fn, "sources", sources, 'i', 8, {-1, 6},
               "int64[B, 6] (device_ptr, height, width, stride_y, stride_x, stride_c per face), C-contiguous");
        const py::ssize_t b = sources.shape(0);
        const int64_t* rows = bounds_rows(fn, bounds, b);
        const int64_t* src = static_cast<const int64_t*>(sources.data());
        std::vector<e3dmm::CropFace> faces((size_t)b);
        for (py::ssize_t i = 0; i < b; ++i) {
          e3dmm::CropFace& f = faces[(size_t)i];
          const int64_t* r = src + 6 * i;
          f.image = reinterpret_cast<const uint8_t*>((uintptr_t)r[0]);
          f.height = r[1];
          f.width = r[2];
          f.stride_y = r[3];
          f.stride_x = r[4];
          f.stride_c = r[5];
          set_bounds(f, rows + 4 * i);
        }
        const e3dmm::CropNaming naming = cuda_naming();
        e3dmm::CropParams p;
        p.faces = faces.data();
        p.batch = b;
        p.size = bind::checked_int(fn, "size", size, 1, e3dmm::kMaxCropSize);
        p.out = reinterpret_cast<void*>(out);
        p.out_type = static_cast<e3dmm::CropOutType>(bind::checked_int(fn, "out_type", out_type, 1, 2));
        p.naming = &naming;
        py::gil_scoped_release nogil;
        e3dmm::crop_cuda(p, reinterpret_cast<void*>(stream));
      },
      py::arg("sources"), py::arg("bounds"), py::arg("out"), py::arg("size"), py::arg("out_type"), py::arg("stream"),
      "Launch the CUDA crop kernel (crop.h) for B faces: sources int64[B, 6] (device_ptr, H, W, stride_y, stride_x, "
      "stride_c in elements), bounds int64[B, 4], out the device address of [B, 3, size, size] of out_type "
      "(1 float32, 2 float16), stream a cudaStream_t (integer). Asynchronous.");

  m.attr("CROP_LIMITS") = py::dict(py::arg("max_bound") = e3dmm::kMaxCropBound,
                                   py::arg("max_image_side") = e3dmm::kMaxCropImageSide,
                                   py::arg("max_size") = e3dmm::kMaxCropSize,
                                   py::arg("max_batch") = e3dmm::kMaxCropBatch);
}
