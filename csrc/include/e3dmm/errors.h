/// @file errors.h
/// @brief Typed exceptions thrown by the e3dmm library.
///
/// Every message names the function, argument, file or field, what was expected
/// and what was found. The Python binding maps each type to the matching class
/// of `engine.errors`.
#pragma once

#include <stdexcept>
#include <string>

namespace e3dmm {

/// Base class of every exception the library throws on purpose.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// Bad caller input: wrong shape, size, value or pointer.
class InvalidInput : public Error {
 public:
  explicit InvalidInput(const std::string& what) : Error(what) {}
};

/// A model file is missing, truncated, corrupt or inconsistent.
class ModelFileError : public Error {
 public:
  explicit ModelFileError(const std::string& what) : Error(what) {}
};

/// A kernel, runtime or I/O operation failed while executing.
class BackendError : public Error {
 public:
  explicit BackendError(const std::string& what) : Error(what) {}
};

/// A feature this build or machine lacks (CUDA, TensorRT, a GPU).
class Unavailable : public Error {
 public:
  explicit Unavailable(const std::string& what) : Error(what) {}
};

}  // namespace e3dmm
