// Times the C++ decode path on coefficient files written by bench_cpp_decode.py and
// prints one JSON object per measurement (median and min over --reps runs, in ms):
//   decode_api     e3dmm::Decoder::decode (the C++ API) into a records buffer
//   decode_kernel  e3dmm::decode_cpu on hand-filled DecodeParams (the raw kernel)
// and, for a B = 1 file, the end-to-end latency against its floor, interleaved per repetition:
//   e2e_decode_ply   Decoder::decode + Decoder::write_ply (checks, atomic temp file + rename)
//   e2e_kernel       decode_cpu alone
//   e2e_write_bytes  open + write of the finished PLY bytes + close (no checks, no rename)
//   e2e_ratio        per repetition: decode_ply / (kernel + write_bytes)
//   e2e_write_atomic the same bytes written to a temporary sibling and renamed (the no-partial-file rule)
//   e2e_ratio_atomic per repetition: decode_ply / (kernel + write_atomic)
//   e2e_decode_part / e2e_write_part  the two halves of e2e_decode_ply
//   write_ply_only   the free e3dmm::write_ply alone (diagnostic)
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

double once(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

Stat summary(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return Stat{v[v.size() / 2], v.front()};
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
  bool e2e = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--model" && i + 1 < argc) model = argv[++i];
    else if (a == "--out" && i + 1 < argc) out = argv[++i];
    else if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--no-e2e") e2e = false;
    else files.push_back(a);
  }
  if (model.empty() || out.empty() || files.empty()) {
    std::fprintf(stderr, "usage: bench_cpp_decode --model M.e3dmm --out DIR [--reps R] [--threads T] [--no-e2e] COEFFS.npy...\n");
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
      // The API and the raw kernel call, alternating within each repetition.
      e3dmm::DecodeParams p = m.decode_params(c.data.data(), batch, layout);
      p.records = rec.data();
      auto api = [&] { dec.decode(c.data.data(), batch, layout, nullptr, nullptr, rec.data()); };
      auto raw_kernel = [&] { e3dmm::decode_cpu(p, threads); };
      std::vector<double> t_api, t_kernel;
      api();
      raw_kernel();
      for (int r = 0; r < reps; ++r) {
        if (r % 2) {
          t_api.push_back(once(api));
          t_kernel.push_back(once(raw_kernel));
        } else {
          t_kernel.push_back(once(raw_kernel));
          t_api.push_back(once(api));
        }
      }
      emit("decode_api", path, batch, summary(t_api));
      emit("decode_kernel", path, batch, summary(t_kernel));
      const std::string rec_path = out + "/" + stem_of(path) + ".records";
      if (FILE* f = std::fopen(rec_path.c_str(), "wb")) {
        std::fwrite(rec.data(), 1, rec.size(), f);
        std::fclose(f);
      }
      if (batch != 1 || !e2e) continue;
      // End to end against its floor, interleaved per repetition so that load from other
      // processes falls on all three alike; the ratio is taken per repetition.
      const std::string ply = out + "/" + stem_of(path) + ".ply";
      const std::string raw = out + "/" + stem_of(path) + ".raw.ply";
      const std::string bytes = e3dmm::ply_bytes(rec.data(), n, m.faces(), m.num_faces());
      auto kernel = [&] { e3dmm::decode_cpu(p, threads); };
      auto write_bytes = [&] {
        const int fd = ::open(raw.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || ::write(fd, bytes.data(), bytes.size()) != (ssize_t)bytes.size()) std::perror(raw.c_str());
        ::close(fd);
      };
      // The same bytes with the project's no-partial-file rule: temporary sibling, then rename.
      const std::string tmp = out + "/." + stem_of(path) + ".atomic.tmp", atomic = out + "/" + stem_of(path) + ".atomic.ply";
      auto write_atomic = [&] {
        const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 || ::write(fd, bytes.data(), bytes.size()) != (ssize_t)bytes.size()) std::perror(tmp.c_str());
        ::close(fd);
        if (::rename(tmp.c_str(), atomic.c_str()) != 0) std::perror(atomic.c_str());
      };
      double split = 0;  // when the decode inside end_to_end finished
      auto end_to_end = [&] {
        const auto t0 = std::chrono::steady_clock::now();
        dec.decode(c.data.data(), 1, layout, nullptr, nullptr, rec.data());
        split = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        dec.write_ply(ply, rec.data());
      };
      end_to_end();
      write_bytes();
      write_atomic();
      std::vector<double> tk, tw, ta, te, ted, tew, ratio, ratio_atomic;
      for (int r = 0; r < reps; ++r) {
        // Alternate the order so neither side always runs right after the other's file write.
        // Each write follows a decode, as in the end-to-end path.
        if (r % 2) {
          te.push_back(once(end_to_end));
          tk.push_back(once(kernel));
          tw.push_back(once(write_bytes));
          kernel();
          ta.push_back(once(write_atomic));
        } else {
          tk.push_back(once(kernel));
          ta.push_back(once(write_atomic));
          kernel();
          tw.push_back(once(write_bytes));
          te.push_back(once(end_to_end));
        }
        ted.push_back(split);
        tew.push_back(te.back() - split);
        ratio.push_back(te.back() / (tk.back() + tw.back()));
        ratio_atomic.push_back(te.back() / (tk.back() + ta.back()));
      }
      emit("e2e_kernel", path, batch, summary(tk));
      emit("e2e_write_bytes", path, batch, summary(tw));
      emit("e2e_decode_ply", path, batch, summary(te));
      emit("e2e_ratio", path, batch, summary(ratio));
      emit("e2e_write_atomic", path, batch, summary(ta));
      emit("e2e_ratio_atomic", path, batch, summary(ratio_atomic));
      emit("e2e_decode_part", path, batch, summary(ted));
      emit("e2e_write_part", path, batch, summary(tew));
      emit("write_ply_only", path, batch, time_ms(reps, [&] {
             e3dmm::write_ply(ply, rec.data(), n, m.faces(), m.num_faces());  // free function: builds the face block
           }));
    }
  } catch (const e3dmm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
