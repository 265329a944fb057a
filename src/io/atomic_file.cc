#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

namespace mistral::io_internal {
namespace {

constexpr size_t kBufferBytes = 1 << 20;

std::atomic<uint64_t> temp_counter{0};

Status errno_status(const std::string& path, const std::string& what, int err) {
  return error(path + ": " + what + ": " + std::strerror(err));
}

std::string parent_dir(const std::string& path) {
  std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

}  // namespace

Result<std::unique_ptr<AtomicFile>> AtomicFile::create(const std::string& target) {
  std::unique_ptr<AtomicFile> file(new AtomicFile());
  file->target_ = target;
  // O_EXCL: never write into a file someone else owns. A name can be taken by the orphan of a
  // killed writer whose pid has been recycled, so a few more counters are tried.
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::string temp = target + ".tmp." + std::to_string(::getpid()) + "." +
                       std::to_string(temp_counter.fetch_add(1));
    file->fd_ = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (file->fd_ >= 0) {
      file->temp_ = std::move(temp);  // only now is it ours to remove
      file->buffer_.resize(kBufferBytes);
      return file;
    }
    if (errno != EEXIST) return errno_status(target, "cannot create temporary file " + temp, errno);
  }
  return errno_status(target, "cannot create a temporary file next to it", EEXIST);
}

AtomicFile::~AtomicFile() {
  if (!committed_) abandon();
}

void AtomicFile::abandon() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!temp_.empty()) ::unlink(temp_.c_str());
  temp_.clear();
}

Status AtomicFile::fail(const std::string& what) {
  Status status = errno_status(target_, what, errno);
  abandon();
  return status;
}

Status AtomicFile::write_all(const char* p, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("write to temporary file failed");
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return Status::ok_status();
}

Status AtomicFile::flush() {
  MISTRAL_RETURN_IF_ERROR(write_all(buffer_.data(), used_));
  used_ = 0;
  return Status::ok_status();
}

Status AtomicFile::append(const void* data, size_t size) {
  if (fd_ < 0) return error(target_ + ": write after a failed write");
  if (size == 0) return Status::ok_status();  // data may be nullptr, which memcpy must not see
  const char* p = static_cast<const char*>(data);
  if (used_ + size > buffer_.size()) {
    MISTRAL_RETURN_IF_ERROR(flush());
    // Large tensors go straight to the file instead of being copied through the buffer.
    if (size >= buffer_.size()) return write_all(p, size);
  }
  std::memcpy(buffer_.data() + used_, p, size);
  used_ += size;
  return Status::ok_status();
}

Status AtomicFile::commit() {
  if (fd_ < 0) return error(target_ + ": commit after a failed write");
  MISTRAL_RETURN_IF_ERROR(flush());
  if (::fsync(fd_) != 0) return fail("fsync of temporary file failed");
  // close() can report a deferred write error (e.g. on network file systems).
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) return fail("close of temporary file failed");
  if (::rename(temp_.c_str(), target_.c_str()) != 0) {
    Status status = errno_status(target_, "cannot rename " + temp_ + " over it", errno);
    abandon();
    return status;
  }
  committed_ = true;
  return fsync_directory(parent_dir(target_));
}

Status fsync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_status(dir, "cannot open directory to fsync it", errno);
  Status status;
  if (::fsync(fd) != 0) status = errno_status(dir, "fsync of directory failed", errno);
  ::close(fd);
  return status;
}

Status remove_if_exists(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return errno_status(path, "cannot remove", errno);
  }
  return Status::ok_status();
}

}  // namespace mistral::io_internal
