// A minimal, strict reader of NumPy .npy files holding little-endian float32 C-order
// arrays (what numpy.save writes for np.float32 data). Anything else is rejected with
// e3dmm::InvalidInput naming the file, the field, what was expected and what was found.
// Header-only example code: copy it into your application if it fits.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "e3dmm/errors.h"

namespace npy {

struct Array {
  std::vector<int64_t> shape;
  std::vector<float> data;  // C order
  int64_t dim(size_t i) const { return i < shape.size() ? shape[i] : 0; }
};

namespace detail {

[[noreturn]] inline void fail(const std::string& path, const std::string& field, const std::string& expected,
                              const std::string& found) {
  throw e3dmm::InvalidInput(path + ": " + field + ": expected " + expected + ", found " + found);
}

// The value text of `'key': ` inside the header dict, up to the next top-level ',' or '}'.
inline std::string dict_value(const std::string& h, const std::string& key) {
  const std::string k = "'" + key + "':";
  const size_t at = h.find(k);
  if (at == std::string::npos) return {};
  size_t i = at + k.size();
  long depth = 0;  // signed: an unmatched ')' must not wrap it around
  while (i < h.size() && h[i] == ' ') ++i;
  const size_t start = i;
  for (; i < h.size(); ++i) {
    if (h[i] == '(') ++depth;
    else if (h[i] == ')') --depth;
    else if ((h[i] == ',' || h[i] == '}') && depth <= 0) break;
  }
  return h.substr(start, i - start);
}

}  // namespace detail

/// Reads a float32 .npy file; `path` names it in errors.
inline Array load_float32(const std::string& path) {
  using detail::fail;
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, "file", "a readable .npy file", "none (missing or unreadable)");
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0)
    fail(path, "magic", "\\x93NUMPY (a .npy file)", "other bytes or a file of " + std::to_string(bytes.size()) + " bytes");
  const int major = (unsigned char)bytes[6];
  if (major < 1 || major > 3 || bytes[7] != 0)
    fail(path, "version", "1.0, 2.0 or 3.0", std::to_string(major) + "." + std::to_string((unsigned char)bytes[7]));
  size_t hlen, hstart;
  if (major == 1) {
    hlen = (unsigned char)bytes[8] | ((size_t)(unsigned char)bytes[9] << 8);
    hstart = 10;
  } else {
    if (bytes.size() < 12) fail(path, "header", "a 12-byte preamble", std::to_string(bytes.size()) + " bytes");
    uint32_t l;
    std::memcpy(&l, &bytes[8], 4);
    hlen = l;
    hstart = 12;
  }
  if (hlen > bytes.size() - hstart)
    fail(path, "header", std::to_string(hlen) + " header bytes", std::to_string(bytes.size() - hstart) + " left");
  const std::string h(&bytes[hstart], hlen);
  const std::string descr = detail::dict_value(h, "descr");
  if (descr != "'<f4'") fail(path, "descr", "'<f4' (little-endian float32)", descr.empty() ? "none" : descr);
  const std::string order = detail::dict_value(h, "fortran_order");
  if (order != "False") fail(path, "fortran_order", "False (C order)", order.empty() ? "none" : order);
  const std::string shape_text = detail::dict_value(h, "shape");
  if (shape_text.size() < 2 || shape_text.front() != '(' || shape_text.back() != ')')
    fail(path, "shape", "a tuple", shape_text.empty() ? "none" : shape_text);
  Array a;
  int64_t count = 1;
  const std::string inner = shape_text.substr(1, shape_text.size() - 2);
  size_t i = 0;
  while (i < inner.size()) {
    while (i < inner.size() && (inner[i] == ' ' || inner[i] == ',')) ++i;
    if (i == inner.size()) break;
    int64_t v = 0;
    size_t digits = 0;
    for (; i < inner.size() && inner[i] >= '0' && inner[i] <= '9' && digits < 13; ++i, ++digits)
      v = v * 10 + (inner[i] - '0');
    if (digits == 0 || (i < inner.size() && inner[i] != ',' && inner[i] != ' '))
      fail(path, "shape", "a tuple of non-negative integers below 10^13", shape_text);
    a.shape.push_back(v);
    if (v != 0 && count > (int64_t(1) << 40) / v) fail(path, "shape", "fewer than 2^40 elements", shape_text);
    count *= v;
  }
  const size_t data_at = hstart + hlen;
  const uint64_t want = (uint64_t)count * 4, have = bytes.size() - data_at;
  if (want != have)
    fail(path, "data", std::to_string(want) + " bytes for shape " + shape_text, std::to_string(have) + " bytes");
  a.data.resize((size_t)count);
  if (count) std::memcpy(a.data.data(), &bytes[data_at], (size_t)want);
  return a;
}

}  // namespace npy
