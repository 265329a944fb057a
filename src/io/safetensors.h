// Strict reader of the safetensors format (https://huggingface.co/docs/safetensors): an 8-byte
// little-endian header length N, N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets}, ...,
// "__metadata__": {str: str}}, then the data section. Files are memory-mapped read-only; a
// SafetensorsFile owns its mapping and is immutable after open(), so it is safe to share between
// threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace mistral {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t data_begin = 0;  // byte offsets relative to the start of the data section
  uint64_t data_end = 0;

  uint64_t num_elements() const;
  uint64_t num_bytes() const { return data_end - data_begin; }
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in the order of their data offsets
  std::map<std::string, std::string> metadata;
  uint64_t data_section_offset = 0;  // 8 + header length
};

// Largest header accepted (the reference implementation's limit).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100000000;

// Parses and validates the header of a whole safetensors file held in bytes[0, size). Rejects:
// header length 0, larger than the file or than kMaxSafetensorsHeaderBytes; non-UTF-8 or malformed
// JSON; duplicate keys; unknown dtypes; shape x dtype overflow; byte spans that do not match the
// shape, that overlap, leave gaps, run backwards or past the end of the file. Zero-size tensors are
// legal. `source` (usually the path) prefixes every error message.
Result<SafetensorsHeader> parse_safetensors_header(const uint8_t* bytes, size_t size,
                                                   const std::string& source);

// A read-only memory mapping of a whole file.
class MappedFile {
 public:
  static Result<std::shared_ptr<MappedFile>> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool maps(const void* p) const {
    const auto* b = static_cast<const uint8_t*>(p);
    return data_ != nullptr && b >= data_ && b < data_ + size_;
  }
  const std::string& path() const { return path_; }
  // Reads the whole file in and maps every page now, so that the first pass over the data (the
  // first request) runs as fast as later ones. Best effort: a kernel without MADV_POPULATE_READ
  // only gets a read-ahead hint.
  void prefault() const;

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Drops the resident pages wholly inside [data, data + bytes) of a read-only file mapping (they
// stay in the page cache and fault back in if read again). For data read once at load, such as
// weights quantized into a new buffer, so that they stop counting towards resident memory.
void release_mapped_range(const void* data, size_t bytes);
// Maps the pages of [data, data + bytes) of a file mapping now, as MappedFile::prefault does.
void prefault_mapped_range(const void* data, size_t bytes);

class SafetensorsFile {
 public:
  static Result<std::shared_ptr<SafetensorsFile>> open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  void prefault() const { file_->prefault(); }
  bool maps(const void* p) const { return file_->maps(p); }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  // nullptr when absent.
  const TensorInfo* find(std::string_view name) const;
  // Start of the tensor's bytes inside the mapping (valid while this object lives).
  const uint8_t* tensor_data(const TensorInfo& info) const {
    return file_->data() + header_.data_section_offset + info.data_begin;
  }

 private:
  std::shared_ptr<MappedFile> file_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;
};

}  // namespace mistral
