// Times the C++ decode path on coefficient files written by bench_cpp_decode.py and
// prints one JSON object per measurement (median and min over --reps runs, in ms):
//   decode_api     e3dmm::Decoder::decode (the C++ API) into a records buffer
//   decode_kernel  e3dmm::decode_cpu on hand-filled DecodeParams (the raw kernel)
// and, for a B = 1 file, the end-to-end latency against its floor:
//   decode_ply     Decoder::decode + e3dmm::write_ply (checks, face block, atomic rename)
//   write_bytes    open + write of the finished PLY bytes + close (no checks, no rename)
// It also saves the decoded records (<out>/<stem>.records) so the driver can compare them
// with the Python-bound kernel's output.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "e3dmm/e3dmm.h"
#include "npy.h"

namespace {

struct Stat {
  double median, min;
};

Stat time_ms(int reps, const std::function<void()>& fn) {
  fn();  // warm: page faults of the mapping and the output buffer
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return {t[t.size() / 2], t.front()};
}

void emit(const char* what, const std::string& file, int64_t batch, Stat s) {
  std::printf("{\"what\": \"%s\", \"file\": \"%s\", \"batch\": %lld, \"median_ms\": %.4f, \"min_ms\": %.4f}\n", what,
              file.c_str(), (long long)batch, s.median, s.min);
}

std::string stem_of(const std::string& p) {
  std::string n = p.substr(p.find_last_of('/') + 1);
  return n.substr(0, n.rfind('.'));
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, out;
  std::vector<std::string> files;
  int reps = 20, threads = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--model" && i + 1 < argc) model = argv[++i];
    else if (a == "--out" && i + 1 < argc) out = argv[++i];
    else if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else files.push_back(a);
  }
  if (model.empty() || out.empty() || files.empty()) {
    std::fprintf(stderr, "usage: bench_cpp_decode --model M.e3dmm --out DIR [--reps R] [--threads T] COEFFS.npy...\n");
    return 2;
  }
  try {
    const e3dmm::Decoder dec = e3dmm::Decoder::load(model, e3dmm::BasisType::Float32, threads);
    const e3dmm::MorphableModel& m = dec.model();
    const int64_t n = m.num_vertices();
    for (const std::string& path : files) {
      const npy::Array c = npy::load_float32(path);
      const int64_t batch = c.dim(0);
      e3dmm::CoeffLayout layout = m.default_layout();
      layout.stride = (int)c.dim(1);
      std::vector<uint8_t> rec((size_t)(batch * n * e3dmm::kRecordBytes));
      emit("decode_api", path, batch, time_ms(reps, [&] {
             dec.decode(c.data.data(), batch, layout, nullptr, nullptr, rec.data());
           }));
      e3dmm::DecodeParams p = m.decode_params(c.data.data(), batch, layout);
      p.records = rec.data();
      emit("decode_kernel", path, batch, time_ms(reps, [&] { e3dmm::decode_cpu(p, threads); }));
      const std::string rec_path = out + "/" + stem_of(path) + ".records";
      if (FILE* f = std::fopen(rec_path.c_str(), "wb")) {
        std::fwrite(rec.data(), 1, rec.size(), f);
        std::fclose(f);
      }
      if (batch != 1) continue;
      const std::string ply = out + "/" + stem_of(path) + ".ply";
      emit("decode_ply", path, batch, time_ms(reps, [&] {
             dec.decode(c.data.data(), 1, layout, nullptr, nullptr, rec.data());
             e3dmm::write_ply(ply, rec.data(), n, m.faces(), m.num_faces());
           }));
      const std::string bytes = e3dmm::ply_bytes(rec.data(), n, m.faces(), m.num_faces());
      const std::string raw = out + "/" + stem_of(path) + ".raw.ply";
      emit("write_bytes", path, batch, time_ms(reps, [&] {
             const int fd = ::open(raw.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
             if (fd < 0 || ::write(fd, bytes.data(), bytes.size()) != (ssize_t)bytes.size()) std::perror(raw.c_str());
             ::close(fd);
           }));
    }
  } catch (const e3dmm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
