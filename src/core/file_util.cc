#include "core/file_util.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace mistral {

Result<std::string> read_file(const std::string& path, size_t max_bytes) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return error(path + ": cannot open: " + std::strerror(errno));
  if (std::fseek(f.get(), 0, SEEK_END) != 0) return error(path + ": cannot seek");
  const long size = std::ftell(f.get());
  if (size < 0) return error(path + ": cannot tell size (not a regular file?)");
  if (static_cast<size_t>(size) > max_bytes) {
    return error(path + ": file is " + std::to_string(size) + " bytes, more than the " +
                 std::to_string(max_bytes) + " allowed");
  }
  std::rewind(f.get());
  std::string data(static_cast<size_t>(size), '\0');
  if (size > 0 && std::fread(data.data(), 1, data.size(), f.get()) != data.size()) {
    return error(path + ": short read");
  }
  return data;
}

}  // namespace mistral
