// See atomic_file.h. The temporary is created with open(O_EXCL, 0666) rather than
// mkstemp so the final file gets the usual umask-derived permissions, not 0600.
#include "atomic_file.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "e3dmm/errors.h"

namespace e3dmm {
namespace {

std::string folder_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::atomic<unsigned> g_counter{0};

}  // namespace

AtomicFile::AtomicFile(const std::string& who, const std::string& path) : who_(who), path_(path) {
  const std::string base = base_of(path), folder = folder_of(path);
  if (path.empty() || base.empty() || base == "." || base == "..")
    throw InvalidInput(who + ": path: expected a file name, found \"" + path + "\"");
  struct stat st;
  if (::stat(folder.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw InvalidInput(who + ": " + path + ": expected an existing output folder, found no folder \"" + folder + "\"");
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    throw InvalidInput(who + ": " + path + ": expected a file path, found a folder");
  // A unique sibling name: pid + a process-wide counter + a clock tick; O_EXCL catches the rest.
  for (int attempt = 0; attempt < 100; ++attempt) {
    const auto tick = (unsigned long long)std::chrono::steady_clock::now().time_since_epoch().count();
    tmp_ = folder + "/." + base + "." + std::to_string(::getpid()) + "-" + std::to_string(g_counter++) + "-" +
           std::to_string(tick % 1000000007ULL) + ".partial";
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ >= 0) return;
    if (errno != EEXIST) break;
  }
  const int err = errno;
  tmp_.clear();
  throw InvalidInput(who + ": " + path + ": expected a writable folder \"" + folder + "\", found: " + std::strerror(err));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!done_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

void AtomicFile::fail_io(const char* what, int err) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
  tmp_.clear();
  throw BackendError(who_ + ": " + path_ + ": " + what + " failed: " + std::strerror(err));
}

void AtomicFile::write(const struct iovec* pieces, int count) {
  // writev may write less than asked (signals, large sizes); resume where it stopped.
  struct iovec local[16];
  int done = 0;
  while (done < count) {
    const int n = std::min(count - done, 16);
    std::memcpy(local, pieces + done, sizeof(struct iovec) * n);
    int i = 0;
    while (i < n) {
      const ssize_t w = ::writev(fd_, local + i, n - i);
      if (w < 0) {
        if (errno == EINTR) continue;
        fail_io("write", errno);
      }
      size_t left = (size_t)w;
      while (i < n && left >= local[i].iov_len) left -= local[i++].iov_len;
      if (i < n) {
        local[i].iov_base = static_cast<char*>(local[i].iov_base) + left;
        local[i].iov_len -= left;
      }
    }
    done += n;
  }
}

void AtomicFile::write(const void* data, size_t n) {
  struct iovec v{const_cast<void*>(data), n};
  write(&v, 1);
}

void AtomicFile::commit() {
  // No fsync: like engine.fileio.atomic_write, durability across power loss is not promised,
  // only that readers never see a partial file.
  if (::close(fd_) != 0) {
    fd_ = -1;
    fail_io("close", errno);
  }
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail_io("rename into place", errno);
  done_ = true;
}

}  // namespace e3dmm
