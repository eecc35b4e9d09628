// Small helpers shared by the binding files: argument checks with messages that
// name the argument, the expected and the found dtype/shape.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "e3dmm/errors.h"

namespace bind {

namespace py = pybind11;

// Built with std::to_string, not a stream: streams format integers through the locale,
// which crashed in processes that imported PyTorch first (see csrc/src/build_info.cpp).
inline std::string describe(const py::array& a) {
  std::string s = py::str(py::object(a.dtype())).cast<std::string>() + "[";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  s += "]";
  if (!(a.flags() & py::array::c_style)) s += " (not C-contiguous)";
  return s;
}

[[noreturn]] inline void bad_arg(const char* fn, const char* name, const std::string& expected, const py::array& a) {
  throw e3dmm::InvalidInput(std::string(fn) + ": " + name + ": expected " + expected + ", found " + describe(a));
}

// Checks dtype kind/itemsize, rank, the given dims (-1: any) and C-contiguity.
inline void expect(const char* fn, const char* name, const py::array& a, char kind, int itemsize,
                   const std::vector<py::ssize_t>& dims, const std::string& expected, bool writable = false) {
  bool ok = a.dtype().kind() == kind && a.itemsize() == itemsize && a.ndim() == (py::ssize_t)dims.size() &&
            (a.flags() & py::array::c_style);
  for (size_t i = 0; ok && i < dims.size(); ++i) ok = dims[i] < 0 || a.shape(i) == dims[i];
  if (!ok) bad_arg(fn, name, expected, a);
  if (writable && !a.writeable())
    throw e3dmm::InvalidInput(std::string(fn) + ": " + name + ": expected a writable array, found a read-only one");
}

// A Python integer argument narrowed to int after a range check (a bare int parameter would
// turn a too-large value into pybind11's untyped TypeError, or silently wrap after a cast).
inline int checked_int(const char* fn, const char* name, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi)
    throw e3dmm::InvalidInput(std::string(fn) + ": " + name + ": expected an integer in [" + std::to_string(lo) + ", " +
                              std::to_string(hi) + "], found " + std::to_string(v));
  return (int)v;
}

}  // namespace bind
