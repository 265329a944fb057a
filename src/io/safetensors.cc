#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "io/strict_json.h"

namespace mistral {
namespace {

using io_internal::describe_type;
using io_internal::json_quoted;
using nlohmann::json;

constexpr DType kAllDTypes[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kF64, DType::kI64,
                                DType::kI32, DType::kI16, DType::kI8,   DType::kU8,  DType::kBool};

std::string valid_dtype_list() {
  std::string out;
  for (DType t : kAllDTypes) {
    if (!out.empty()) out += ", ";
    out += dtype_name(t);
  }
  return out;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

std::string span_string(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

// Short rendering of an offending value; untrusted values can be long.
std::string excerpt(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 80) text = text.substr(0, 77) + "...";
  return text;
}

// A JSON integer >= 0 (nlohmann stores "-0" as a signed 0); nullopt for anything else.
std::optional<uint64_t> as_non_negative(const json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    return static_cast<uint64_t>(value.get<int64_t>());
  }
  return std::nullopt;
}

// Left-to-right checked product, as the reference validates (so [2^40, 2^40, 0] overflows there
// and here alike).
std::optional<uint64_t> checked_byte_count(const std::vector<int64_t>& shape, DType dtype) {
  uint64_t count = 1;
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(d), &count)) return std::nullopt;
  }
  if (__builtin_mul_overflow(count, static_cast<uint64_t>(dtype_size(dtype)), &count)) {
    return std::nullopt;
  }
  return count;
}

Result<TensorInfo> parse_tensor_entry(const std::string& name, const json& entry) {
  const std::string who = "tensor " + json_quoted(name) + ": ";
  if (!entry.is_object()) {
    return error(who + "entry is " + describe_type(entry) +
                 ", expected an object with fields dtype, shape, data_offsets");
  }
  for (const auto& [field, unused] : entry.items()) {
    if (field != "dtype" && field != "shape" && field != "data_offsets") {
      return error(who + "unexpected field " + json_quoted(field) +
                   " (expected exactly dtype, shape, data_offsets)");
    }
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(field)) return error(who + "missing field '" + field + "'");
  }
  TensorInfo info;
  info.name = name;

  const json& dtype = entry["dtype"];
  if (!dtype.is_string()) {
    return error(who + "field 'dtype' is " + describe_type(dtype) + ", expected a string");
  }
  std::optional<DType> parsed = parse_dtype(dtype.get_ref<const std::string&>());
  if (!parsed) {
    return error(who + "field 'dtype': unknown dtype " +
                 json_quoted(dtype.get_ref<const std::string&>()) +
                 " (valid: " + valid_dtype_list() + ")");
  }
  info.dtype = *parsed;

  const json& shape = entry["shape"];
  if (!shape.is_array()) {
    return error(who + "field 'shape' is " + describe_type(shape) + ", expected an array");
  }
  for (size_t i = 0; i < shape.size(); ++i) {
    std::optional<uint64_t> dim = as_non_negative(shape[i]);
    if (!dim || *dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return error(who + "field 'shape': dimension " + std::to_string(i) + " is " +
                   excerpt(shape[i]) + ", expected a non-negative integer below 2^63");
    }
    info.shape.push_back(static_cast<int64_t>(*dim));
  }
  std::optional<uint64_t> expected_bytes = checked_byte_count(info.shape, info.dtype);
  if (!expected_bytes) {
    return error(who + "field 'shape': " + shape_string(info.shape) + " x " +
                 std::string(dtype_name(info.dtype)) + " overflows 64-bit byte counts");
  }

  const json& offsets = entry["data_offsets"];
  std::optional<uint64_t> begin, end;
  if (offsets.is_array() && offsets.size() == 2) {
    begin = as_non_negative(offsets[0]);
    end = as_non_negative(offsets[1]);
  }
  if (!begin || !end) {
    return error(who + "field 'data_offsets' is " + excerpt(offsets) +
                 ", expected [begin, end] with two non-negative integers");
  }
  if (*begin > *end) {
    return error(who + "field 'data_offsets' " + span_string(*begin, *end) +
                 " runs backwards (begin > end)");
  }
  if (*end - *begin != *expected_bytes) {
    return error(who + "field 'data_offsets' " + span_string(*begin, *end) + " spans " +
                 std::to_string(*end - *begin) + " bytes but shape " + shape_string(info.shape) +
                 " of " + std::string(dtype_name(info.dtype)) + " needs " +
                 std::to_string(*expected_bytes));
  }
  info.data_begin = *begin;
  info.data_end = *end;
  return info;
}

Result<std::map<std::string, std::string>> parse_metadata(const json& value) {
  if (!value.is_object()) {
    return error("field '__metadata__' is " + describe_type(value) +
                 ", expected an object of strings");
  }
  std::map<std::string, std::string> out;
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      return error("field '__metadata__': value of " + json_quoted(key) + " is " +
                   describe_type(item) + ", expected a string");
    }
    out.emplace(key, item.get<std::string>());
  }
  return out;
}

// After sorting by offset the spans must tile [0, data_len) exactly, as the reference's
// `Metadata::validate` plus its end-of-buffer check demand: no overlap, no gap, no byte past the
// end of the file, no trailing byte after the last tensor.
Status check_tiling(const std::vector<TensorInfo>& tensors, uint64_t data_len) {
  uint64_t expected = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : tensors) {
    const std::string who =
        "tensor " + json_quoted(t.name) + ": data_offsets " + span_string(t.data_begin, t.data_end);
    if (t.data_begin < expected) {
      return error(who + " overlaps tensor " + json_quoted(previous->name) + " at " +
                   span_string(previous->data_begin, previous->data_end));
    }
    if (t.data_begin > expected) {
      return error(who + " leaves a gap: bytes [" + std::to_string(expected) + ", " +
                   std::to_string(t.data_begin) + ") of the data section belong to no tensor");
    }
    if (t.data_end > data_len) {
      return error(who + " runs past the end of the file (the data section holds " +
                   std::to_string(data_len) + " bytes; file truncated?)");
    }
    expected = t.data_end;
    previous = &t;
  }
  if (expected != data_len) {
    return error(std::to_string(data_len - expected) +
                 " trailing bytes after the last tensor's data (the data section holds " +
                 std::to_string(data_len) + " bytes, tensors cover " + std::to_string(expected) +
                 ")");
  }
  return Status::ok_status();
}

Result<SafetensorsHeader> parse_header_unprefixed(const uint8_t* bytes, size_t size) {
  if (size == 0) return error("file is empty (0 bytes), not a safetensors file");
  if (size < 8) {
    return error("file is " + std::to_string(size) +
                 " bytes, too short for the 8-byte header length");
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n == 0) return error("header length is 0");
  if (n > kMaxSafetensorsHeaderBytes) {
    return error("header length " + std::to_string(n) + " exceeds the limit of " +
                 std::to_string(kMaxSafetensorsHeaderBytes) + " bytes (corrupt file?)");
  }
  if (n > size - 8) {
    return error("header length " + std::to_string(n) + " runs past the end of the file (" +
                 std::to_string(size) + " bytes)");
  }
  std::string_view text(reinterpret_cast<const char*>(bytes + 8), n);
  Result<json> parsed = io_internal::parse_json_strict(text);
  if (!parsed.ok()) return parsed.status().with_context("header");
  const json& root = *parsed;
  if (!root.is_object()) {
    return error("header is " + describe_type(root) + ", expected a JSON object");
  }

  SafetensorsHeader header;
  header.data_section_offset = 8 + n;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      MISTRAL_ASSIGN_OR_RETURN(header.metadata, parse_metadata(value));
    } else {
      MISTRAL_ASSIGN_OR_RETURN(TensorInfo info, parse_tensor_entry(key, value));
      header.tensors.push_back(std::move(info));
    }
  }
  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return std::tie(a.data_begin, a.data_end, a.name) <
                     std::tie(b.data_begin, b.data_end, b.name);
            });
  MISTRAL_RETURN_IF_ERROR(check_tiling(header.tensors, size - header.data_section_offset));
  return header;
}

Status errno_error(const std::string& path, const std::string& what) {
  return error(path + ": " + what + ": " + std::strerror(errno));
}

}  // namespace

uint64_t TensorInfo::num_elements() const {
  uint64_t count = 1;
  for (int64_t d : shape) count *= static_cast<uint64_t>(d);
  return count;
}

Result<SafetensorsHeader> parse_safetensors_header(const uint8_t* bytes, size_t size,
                                                   const std::string& source) {
  Result<SafetensorsHeader> header = parse_header_unprefixed(bytes, size);
  if (!header.ok()) return header.status().with_context(source);
  return header;
}

Result<std::shared_ptr<MappedFile>> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_error(path, "cannot open");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    Status status = errno_error(path, "cannot stat");
    ::close(fd);
    return status;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return error(path + ": not a regular file");
  }
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  // mmap rejects length 0; an empty file keeps data() == nullptr and fails later with a message
  // about its size rather than an obscure EINVAL.
  if (st.st_size > 0) {
    void* addr = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      Status status = errno_error(path, "cannot mmap");
      ::close(fd);
      return status;
    }
    file->data_ = static_cast<const uint8_t*>(addr);
    file->size_ = static_cast<size_t>(st.st_size);
  }
  ::close(fd);  // the mapping keeps the file alive
  return file;
}

void release_mapped_range(const void* data, size_t bytes) {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

void prefault_mapped_range(const void* data, size_t bytes) {
  if (data == nullptr || bytes == 0) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data) / page * page;
  const uintptr_t end = reinterpret_cast<uintptr_t>(data) + bytes;
  void* addr = reinterpret_cast<void*>(begin);
#ifdef MADV_POPULATE_READ
  if (::madvise(addr, end - begin, MADV_POPULATE_READ) == 0) return;
#endif
  ::madvise(addr, end - begin, MADV_WILLNEED);
}

void MappedFile::prefault() const { prefault_mapped_range(data_, size_); }

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

Result<std::shared_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  MISTRAL_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> mapped, MappedFile::open(path));
  auto file = std::make_shared<SafetensorsFile>();
  MISTRAL_ASSIGN_OR_RETURN(file->header_,
                           parse_safetensors_header(mapped->data(), mapped->size(), path));
  file->file_ = std::move(mapped);
  for (size_t i = 0; i < file->header_.tensors.size(); ++i) {
    file->index_.emplace(file->header_.tensors[i].name, i);
  }
  return file;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

}  // namespace mistral
