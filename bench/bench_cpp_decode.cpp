// Times the C++ decode path on coefficient files written by bench_cpp_decode.py and
// prints one JSON object per measurement (median and min over --reps runs, in ms):
//   decode_api     e3dmm::Decoder::decode (the C++ API) into a records buffer
//   decode_kernel  e3dmm::decode_cpu on hand-filled DecodeParams (the raw kernel)
// and, for a B = 1 file, the end-to-end latency (Decoder::decode + Decoder::write_ply)
// against its floor (decode_cpu + writing the finished bytes), when each write creates a
// new file (new_*) and when each replaces the same file (replace_*, in place and atomic);
// *_ratio* are per-repetition ratios. write_ply_only: the free e3dmm::write_ply (diagnostic).
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
      // processes falls on all alike; ratios are taken per repetition. Two scenarios:
      //  new:     every write creates a new file (one PLY per row or frame: the example's use);
      //  replace: every write replaces the same file (on ext4 replacing a file, by rename or
      //           by truncation, starts its writeback at once, which costs about a millisecond).
      const std::string dir = out + "/", stem = stem_of(path);
      const std::string bytes = e3dmm::ply_bytes(rec.data(), n, m.faces(), m.num_faces());
      auto kernel = [&] { e3dmm::decode_cpu(p, threads); };
      auto raw_write = [&](const std::string& file) {  // the bytes, nothing else
        const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || ::write(fd, bytes.data(), bytes.size()) != (ssize_t)bytes.size()) std::perror(file.c_str());
        ::close(fd);
      };
      auto raw_atomic = [&](const std::string& file) {  // the bytes under the no-partial-file rule
        const std::string tmp = dir + ".tmp." + stem;
        raw_write(tmp);
        if (::rename(tmp.c_str(), file.c_str()) != 0) std::perror(file.c_str());
      };
      double split = 0;  // when the decode inside end_to_end finished
      auto end_to_end = [&](const std::string& file) {
        const auto t0 = std::chrono::steady_clock::now();
        dec.decode(c.data.data(), 1, layout, nullptr, nullptr, rec.data());
        split = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        dec.write_ply(file, rec.data());
      };
      const std::string same_e2e = dir + stem + ".ply", same_raw = dir + stem + ".raw.ply",
                        same_atomic = dir + stem + ".atomic.ply";
      end_to_end(same_e2e);
      raw_write(same_raw);
      raw_atomic(same_atomic);
      std::vector<double> tk, tw, te, ted, tew, ratio_new;                   // new files
      std::vector<double> tk2, tw2, ta2, te2, ratio_inplace, ratio_atomic;  // replacing one file
      for (int r = 0; r < reps; ++r) {
        const std::string new_e2e = dir + stem + ".e2e." + std::to_string(r) + ".ply";
        const std::string new_raw = dir + stem + ".raw." + std::to_string(r) + ".ply";
        // Alternate the order; every write follows a decode, as in the end-to-end path.
        if (r % 2) {
          te.push_back(once([&] { end_to_end(new_e2e); }));
          ted.push_back(split);
          tk.push_back(once(kernel));
          tw.push_back(once([&] { raw_write(new_raw); }));
        } else {
          tk.push_back(once(kernel));
          tw.push_back(once([&] { raw_write(new_raw); }));
          te.push_back(once([&] { end_to_end(new_e2e); }));
          ted.push_back(split);
        }
        tew.push_back(te.back() - ted.back());
        ratio_new.push_back(te.back() / (tk.back() + tw.back()));
        ::unlink(new_e2e.c_str());  // outside the timed region
        ::unlink(new_raw.c_str());
        tk2.push_back(once(kernel));
        tw2.push_back(once([&] { raw_write(same_raw); }));
        kernel();
        ta2.push_back(once([&] { raw_atomic(same_atomic); }));
        te2.push_back(once([&] { end_to_end(same_e2e); }));
        ratio_inplace.push_back(te2.back() / (tk2.back() + tw2.back()));
        ratio_atomic.push_back(te2.back() / (tk2.back() + ta2.back()));
      }
      emit("new_kernel", path, batch, summary(tk));
      emit("new_write_bytes", path, batch, summary(tw));
      emit("new_decode_ply", path, batch, summary(te));
      emit("new_decode_part", path, batch, summary(ted));
      emit("new_write_part", path, batch, summary(tew));
      emit("new_ratio", path, batch, summary(ratio_new));
      emit("replace_kernel", path, batch, summary(tk2));
      emit("replace_write_bytes", path, batch, summary(tw2));
      emit("replace_write_atomic", path, batch, summary(ta2));
      emit("replace_decode_ply", path, batch, summary(te2));
      emit("replace_ratio_inplace", path, batch, summary(ratio_inplace));
      emit("replace_ratio_atomic", path, batch, summary(ratio_atomic));
      emit("write_ply_only", path, batch, time_ms(reps, [&] {
             e3dmm::write_ply(same_e2e, rec.data(), n, m.faces(), m.num_faces());  // free function: builds the face block
           }));
    }
  } catch (const e3dmm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
