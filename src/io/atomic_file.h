// Private to io/: a file written under a temporary name next to its target and renamed over it on
// commit, so readers see either the old file or the complete new one, never a partial write, and a
// reader that has the old file mapped keeps its inode. Not thread-safe; one writer per object.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace mistral::io_internal {

class AtomicFile {
 public:
  // Creates `<target>.tmp.<pid>.<counter>` in the target's directory (which must exist).
  static Result<std::unique_ptr<AtomicFile>> create(const std::string& target);
  // Removes the temporary file unless commit() succeeded.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  Status append(const void* data, size_t size);
  // Flushes, fsyncs, renames over the target and fsyncs the directory.
  Status commit();

  const std::string& target() const { return target_; }

 private:
  AtomicFile() = default;
  Status flush();
  Status write_all(const char* data, size_t size);
  Status fail(const std::string& what);  // errno text, then abandon the temporary file
  void abandon();

  std::string target_;
  std::string temp_;
  int fd_ = -1;
  bool committed_ = false;
  std::vector<char> buffer_;  // coalesces the many small writes of headers and small tensors
  size_t used_ = 0;
};

// fsync of a directory, so that renames and unlinks in it survive a crash.
Status fsync_directory(const std::string& dir);

// unlink() that treats a missing file as success.
Status remove_if_exists(const std::string& path);

}  // namespace mistral::io_internal
