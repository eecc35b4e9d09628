// The hostile caches of issue 13 (findings 2, 3, 4, 7, 8), each built here exactly and
// tiny: MorphableModel::load refuses every one with a ModelFileError naming the file and the
// field, by the rules of docs/model_cache_format.md. Run under ASan/UBSan by .ci/run.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "cache_writer.h"
#include "e3dmm/decode.h"
#include "e3dmm/decoder.h"
#include "e3dmm/errors.h"
#include "e3dmm/limits.h"
#include "e3dmm/model.h"

using e3dmm::MorphableModel;
using testutil::get_u64;
using testutil::put_u32;
using testutil::put_u64;
using testutil::rec;
using testutil::TinyModel;

#if defined(__SANITIZE_ADDRESS__)
#define E3DMM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define E3DMM_ASAN 1
#endif
#endif

namespace {

const std::string kMeta = "{\"format\":\"e3dmm-cache\",\"synthetic\":false,\"name\":\"x\",\"source\":\"y\"}";

std::string load_error(const std::string& path) {
  try {
    MorphableModel::load(path);
  } catch (const e3dmm::ModelFileError& e) {
    return e.what();
  }
  return "(loaded)";
}

void expect_refused(const std::string& path, const std::vector<std::string>& parts) {
  const std::string msg = load_error(path);
  ASSERT_NE(msg, "(loaded)") << path << " was accepted";
  EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "message does not start with the file: " << msg;
  for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
}

// A valid tiny model (N 4, F 2, Ks 2, Kt 3, 68 landmarks) with `meta` as metadata.
std::vector<uint8_t> tiny(const std::string& meta = kMeta, bool landmarks = true) {
  TinyModel t = testutil::make_model(4, 2, 2, 3, 11, landmarks);
  t.metadata = meta;
  return testutil::cache_bytes(t);
}

struct Hostile : ::testing::Test {
  testutil::TempDir dir;
  std::string write(const std::string& name, const std::vector<uint8_t>& b) {
    testutil::write_file(dir.file(name), b);
    return dir.file(name);
  }
};

}  // namespace

// Finding 2: 1 vertex, 1 shape component and 2^31 - 1 texture components; tex_basis and
// tex_sigma overlap in one sparse region (25.8 GB on paper, 8 KB on disk). Ks + Kt wrapped
// negative in decode's int arithmetic; the file is now refused before anything is decoded.
TEST_F(Hostile, Finding2OverlappingHugeTextureBasisInASparseFile) {
  const uint64_t kt = (uint64_t(1) << 31) - 1, n3 = 3;
  struct A {
    const char* name;
    uint32_t dtype, ndim;
    uint64_t d0, d1;
  };
  const std::vector<A> arrays = {{"shape_mean", 1, 1, n3, 1},  {"shape_basis", 1, 2, 1, n3}, {"shape_sigma", 1, 1, 1, 1},
                                 {"tex_mean", 1, 1, n3, 1},    {"tex_basis", 1, 2, kt, n3},  {"tex_sigma", 1, 1, kt, 1},
                                 {"faces", 3, 2, 1, 3}};
  std::vector<uint8_t> b(1024, 0);
  std::memcpy(b.data(), "E3DMMBIN", 8);
  put_u32(&b, 8, 1);
  put_u32(&b, 12, 7);
  put_u64(&b, 16, 512);
  put_u64(&b, 24, kMeta.size());
  std::memcpy(&b[512], kMeta.data(), kMeta.size());
  uint64_t pos = 640;
  for (int i = 0; i < 7; ++i) {
    const A& a = arrays[i];
    std::memcpy(&b[rec(i, 0)], a.name, std::strlen(a.name));
    put_u32(&b, rec(i, 24), a.dtype);
    put_u32(&b, rec(i, 28), a.ndim);
    put_u64(&b, rec(i, 32), a.d0);
    put_u64(&b, rec(i, 40), a.d1);
    put_u64(&b, rec(i, 56), a.d0 * a.d1 * 4);
    if (i != 4 && i != 5) {  // the small arrays first, 64 bytes apart
      put_u64(&b, rec(i, 48), pos);
      pos += 64;
    }
  }
  put_u64(&b, rec(4, 48), pos);  // tex_basis last, and tex_sigma inside it
  put_u64(&b, rec(5, 48), pos);
  const uint64_t size = pos + kt * n3 * 4;
  put_u64(&b, 32, size);
  const std::string path = write("kt_overflow.e3dmm", b);
  ASSERT_EQ(::truncate(path.c_str(), (off_t)size), 0);  // sparse: nothing is written past 8 KB
  expect_refused(path, {"array 'tex_basis' offset", "does not overlap array 'tex_sigma'"});

  // Without the overlap, Kt past the bound is refused as a shape (a small file, Kt = 385).
  TinyModel t = testutil::make_model(4, 2, 2, e3dmm::kMaxComponents + 1, 12);
  t.metadata = kMeta;
  expect_refused(write("kt385.e3dmm", testutil::cache_bytes(t)), {"tex_basis' shape", "Kt <= 384", "[385, 12]"});
}

// The same kind in the decode API itself: component counts and offsets summed in int64 and
// bounded, so no combination of ints wraps around a check.
TEST(HostileDecodeParams, SumsOfComponentsAndOffsetsDoNotWrap) {
  std::vector<float> mean(3, 0.f), basis(3, 0.f), coeffs(4, 0.f), out(3);
  e3dmm::DecodeParams p;
  p.shape_mean = p.tex_mean = mean.data();
  p.shape_basis = p.tex_basis = basis.data();
  p.num_vertices = 1;
  p.coeffs = coeffs.data();
  p.batch = 1;
  p.vertices = out.data();
  p.shape_components = 1;
  p.tex_components = INT_MAX;  // Ks + Kt wraps negative in int
  p.coeff_stride = INT_MAX;
  p.tex_offset = 1;
  EXPECT_THROW(e3dmm::decode_cpu(p), e3dmm::InvalidInput);
  p.tex_components = 1;
  p.tex_offset = INT_MAX;  // tex_offset + Kt wraps negative in int
  p.coeff_stride = 2;
  try {
    e3dmm::decode_cpu(p);
    ADD_FAILURE() << "accepted tex_offset INT_MAX";
  } catch (const e3dmm::InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find("2147483648"), std::string::npos) << e.what();  // the int64 sum
  }
  p.tex_offset = 1;
  p.batch = e3dmm::kMaxBatch + 1;
  EXPECT_THROW(e3dmm::decode_cpu(p), e3dmm::InvalidInput);
  p.batch = 1;
  p.num_vertices = e3dmm::kMaxVertices + 1;
  EXPECT_THROW(e3dmm::decode_cpu(p), e3dmm::InvalidInput);
}

// Finding 3: dims whose product is 0 with 0 bytes, which passed nbytes == d0 * d1 * 4.
TEST_F(Hostile, Finding3ZeroProductDims) {
  const std::vector<uint8_t> good = tiny();
  for (auto dims : {std::make_pair(~0ull - 63, 0ull), std::make_pair(0ull, 1ull << 62), std::make_pair(0ull, 1ull)}) {
    SCOPED_TRACE(std::to_string(dims.first) + " x " + std::to_string(dims.second));
    std::vector<uint8_t> b = good;
    put_u32(&b, rec(1, 28), 2);  // shape_basis, ndim 2
    put_u64(&b, rec(1, 32), dims.first);
    put_u64(&b, rec(1, 40), dims.second);
    put_u64(&b, rec(1, 56), 0);
    expect_refused(write("dims.e3dmm", b), {"array 'shape_basis' dims", "[1, 2147483647]"});
  }
  // dims whose product overflows uint64 to a small number
  std::vector<uint8_t> b = good;
  put_u64(&b, rec(1, 32), 1ull << 33);
  put_u64(&b, rec(1, 40), 1ull << 31);
  put_u64(&b, rec(1, 56), 0);
  expect_refused(write("wrap.e3dmm", b), {"array 'shape_basis' dims"});
}

// Finding 4: nesting depth; the same limit (64, the top-level object counting 1) in both readers.
TEST_F(Hostile, Finding4NestingDepth) {
  auto nested = [](int arrays) {
    return "{\"format\":\"e3dmm-cache\",\"synthetic\":false,\"name\":\"x\",\"source\":\"y\",\"deep\":" +
           std::string(arrays, '[') + std::string(arrays, ']') + "}";
  };
  EXPECT_EQ(load_error(write("d63.e3dmm", tiny(nested(63)))), "(loaded)");  // depth 64
  expect_refused(write("d64.e3dmm", tiny(nested(64))), {"metadata", "nesting depth of at most 64"});
  expect_refused(write("d1000.e3dmm", tiny(nested(1000))), {"metadata", "nesting depth"});
}

// Finding 7: what one reader accepted and the other refused; all refused now, by the spec.
TEST_F(Hostile, Finding7WhatTheReadersDisagreedOn) {
  const std::vector<uint8_t> good = tiny();
  struct Case {
    const char* what;
    std::function<void(std::vector<uint8_t>*)> mutate;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {"array inside the header", [](auto* b) { put_u64(b, rec(2, 48), 0); }, {"shape_sigma' offset/nbytes"}},
      {"array inside the table", [](auto* b) { put_u64(b, rec(2, 48), 64); }, {"shape_sigma' offset/nbytes"}},
      {"arrays overlapping", [](auto* b) { put_u64(b, rec(5, 48), get_u64(*b, rec(4, 48))); },
       {"array 'tex_basis' offset", "overlap array 'tex_sigma'"}},
      {"array over the metadata", [](auto* b) { put_u64(b, rec(7, 48), 64 + 64 * 8); },  // where the metadata starts
       {"overlap", "landmarks", "metadata"}},
      {"NUL inside a name", [](auto* b) { (*b)[rec(0, 5)] = 0; }, {"record 0 name", "shape\\x00mean"}},
      {"non-printable byte", [](auto* b) { (*b)[rec(3, 2)] = 0x7f; }, {"record 3 name", "te\\x7f_mean"}},
      {"bytes after the NUL", [](auto* b) { (*b)[rec(6, 20)] = 'x'; }, {"record 6 name"}},
      {"reserved byte", [](auto* b) { (*b)[50] = 1; }, {"reserved", "24 zero bytes"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    std::vector<uint8_t> b = good;
    c.mutate(&b);
    expect_refused(write("bad.e3dmm", b), c.parts);
  }
  const std::string head = "{\"format\":\"e3dmm-cache\",\"synthetic\":false,\"name\":\"x\",\"source\":\"y\"";
  const std::vector<std::pair<std::string, std::string>> json = {
      {head + ",\"v\":NaN}", "invalid JSON"},
      {head + ",\"v\":Infinity}", "invalid JSON"},
      {head + ",\"v\":-Infinity}", "invalid JSON"},
      {head + ",\"v\":01}", "no leading zero"},
      {head + ",\"v\":-00.5}", "no leading zero"},
      {head + ",\"name\":\"again\"}", "no duplicate keys"},
      {head + ",\"o\":{\"a\":1,\"a\":2}}", "no duplicate keys"},
      {head + ",\"o\":{\"a\":1,\"\\u0061\":2}}", "no duplicate keys"},  // equal after unescaping
      {head + ",\"s\":\"\\ud800\"}", "low surrogate"},
      {head + ",\"s\":\"\\udc00x\"}", "lone low surrogate"},
      {head + ",\"v\":1" + std::string(64, '0') + "}", "at most 64 characters"},
      {head + ",\"v\":+1}", "invalid JSON"},
      {head + ",\"v\":.5}", "invalid JSON"},
      {head + ",}", "invalid JSON"},
      {head + "} // comment", "end of the metadata"},
      {"\xef\xbb\xbf" + head + "}", "invalid JSON"},  // a byte-order mark
      {"{\"format\":\"e3dmm-cache\",\"synthetic\":false,\"name\":1,\"source\":\"y\"}", "\"name\""},
  };
  for (const auto& c : json) {
    SCOPED_TRACE(c.first);
    expect_refused(write("meta.e3dmm", tiny(c.first)), {"metadata", c.second});
  }
  EXPECT_EQ(load_error(write("ok.e3dmm", tiny(head + ",\"v\":-0.5e+3,\"s\":\"\\ud83d\\ude00\",\"w\":1" +
                                                   std::string(63, '0') + "}"))),
            "(loaded)");
}

// Finding 8: non-finite model values are refused at load, naming the file and the field
// (engine/morphable/model.py's check_finite words it the same way).
TEST_F(Hostile, Finding8NonFiniteValues) {
  for (int field = 0; field < 6; ++field) {
    TinyModel t = testutil::make_model(4, 2, 2, 3, 13);
    t.metadata = kMeta;
    std::vector<float>* arrays[6] = {&t.shape_mean, &t.shape_basis, &t.shape_sigma,
                                     &t.tex_mean,   &t.tex_basis,   &t.tex_sigma};
    (*arrays[field])[1] = field % 2 ? -INFINITY : NAN;
    SCOPED_TRACE(testutil::kNames[field]);
    const std::string name = testutil::kNames[field];
    const bool matrix = name.find("basis") != std::string::npos;
    expect_refused(write("nan.e3dmm", testutil::cache_bytes(t)),
                   {name + ": expected finite values (no NaN or Inf), found 1 non-finite value in float32",
                    std::string("the first ") + (field % 2 ? "-inf" : "nan") + (matrix ? " at [0, 1]" : " at [1]")});
  }
}

// Finding 8: a mapping that fails (ENOMEM) is a ModelFileError naming the file, as are a FIFO
// (refused without waiting for a writer) and a folder.
TEST_F(Hostile, Finding8MappingFailuresAndSpecialFiles) {
  const std::string fifo = dir.file("fifo.e3dmm");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_refused(fifo, {"file", "special file"});
  expect_refused(dir.path, {"file", "a folder"});
#if defined(E3DMM_ASAN)
  GTEST_SKIP() << "RLIMIT_AS cannot be lowered under AddressSanitizer (its shadow memory)";
#else
  const std::string big = dir.file("big.e3dmm");
  {
    std::vector<uint8_t> head = tiny();
    testutil::write_file(big, head);
    ASSERT_EQ(::truncate(big.c_str(), 256 << 20), 0);  // 256 MB, sparse
  }
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // child: too little address space left for a 256 MB mapping
    std::ifstream status("/proc/self/status");
    long vm_kb = 0;
    for (std::string line; std::getline(status, line);)
      if (line.rfind("VmSize:", 0) == 0) vm_kb = std::stol(line.substr(7));
    const rlim_t limit = (rlim_t)(vm_kb + 64 * 1024) * 1024;
    struct rlimit rl = {limit, limit};
    if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(3);
    const std::string msg = load_error(big);
    const bool ok = msg.rfind(big + ": file: expected a readable file that can be memory-mapped, found ", 0) == 0;
    if (!ok) std::fprintf(stderr, "message: %s\n", msg.c_str());
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "mapping under RLIMIT_AS did not give the expected ModelFileError";
#endif
}

// Found by the C++ fuzz target: a finite float32 basis value beyond float16's range became Inf
// in make_float16_bases, so Float16 decodes gave NaN (0 * Inf) even for zero coefficients.
TEST_F(Hostile, Float16BasesRefuseValuesFloat16CannotHold) {
  TinyModel t = testutil::make_model(4, 2, 2, 3, 14);
  t.metadata = kMeta;
  t.tex_basis[1 * 12 + 2] = 1e5f;
  t.shape_basis[3] = 65504.f;  // the largest float16: fine
  const std::string path = write("f16.e3dmm", testutil::cache_bytes(t));
  MorphableModel m = MorphableModel::load(path);  // a valid model: Float32 decodes it
  try {
    m.make_float16_bases();
    ADD_FAILURE() << "make_float16_bases accepted 1e5";
  } catch (const e3dmm::InvalidInput& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path + ": tex_basis[1, 2]: expected a value float16 can hold"), std::string::npos) << msg;
    EXPECT_NE(msg.find("found 1e+05"), std::string::npos) << msg;
  }
  EXPECT_FALSE(m.has_float16_bases());
  EXPECT_THROW(e3dmm::Decoder(std::move(m), e3dmm::BasisType::Float16), e3dmm::InvalidInput);
}
