// Atomic output files: write to a temporary name in the destination folder, rename into
// place when complete. A failure (or a destructor run by an exception) removes the
// temporary, so the final name never holds a partial file.
#pragma once

#include <sys/uio.h>

#include <string>

namespace e3dmm {

class AtomicFile {
 public:
  /// Creates the temporary sibling of `path`. `who` prefixes error messages.
  /// Throws InvalidInput when the folder is missing or not writable.
  AtomicFile(const std::string& who, const std::string& path);
  ~AtomicFile();  // removes the temporary unless commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  /// Writes all bytes of the given pieces in order. Throws BackendError on failure.
  void write(const struct iovec* pieces, int count);
  void write(const void* data, size_t n);
  /// Closes and renames onto the final path. Throws InvalidInput/BackendError on failure.
  void commit();

 private:
  void fail_io(const char* what, int err);
  std::string who_, path_, tmp_;
  int fd_ = -1;
  bool done_ = false;
};

}  // namespace e3dmm
