#include "io/safetensors_writer.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <new>
#include <set>
#include <system_error>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/index_parse.h"
#include "io/safetensors.h"
#include "io/strict_json.h"

namespace mistral {
namespace {

namespace fs = std::filesystem;
using io_internal::AtomicFile;
using io_internal::json_quoted;
using nlohmann::json;

constexpr char kIndexName[] = "model.safetensors.index.json";
constexpr char kSingleName[] = "model.safetensors";

using TensorList = std::vector<const TensorToWrite*>;

// Byte size of each tensor, after checking everything a reader would reject; messages name the
// tensor and are prefixed with `where` by the caller.
Result<std::vector<uint64_t>> validate(const TensorList& tensors,
                                       const std::map<std::string, std::string>& metadata) {
  for (const auto& [key, value] : metadata) {
    if (io_internal::find_invalid_utf8(key) || io_internal::find_invalid_utf8(value)) {
      return error("metadata entry " + json_quoted(key) + " is not valid UTF-8");
    }
  }
  std::vector<uint64_t> sizes;
  std::set<std::string_view> names;
  uint64_t total = 0;
  for (const TensorToWrite* t : tensors) {
    const std::string who = "tensor " + json_quoted(t->name) + ": ";
    if (io_internal::find_invalid_utf8(t->name)) return error(who + "name is not valid UTF-8");
    if (t->name == "__metadata__") return error(who + "name is reserved for the metadata");
    if (!names.insert(t->name).second) return error(who + "name appears twice");
    if (dtype_size(t->dtype) == 0) return error(who + "invalid dtype");
    uint64_t bytes = dtype_size(t->dtype);
    for (int64_t d : t->shape) {
      if (d < 0) return error(who + "negative dimension " + std::to_string(d));
      if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes)) {
        return error(who + "shape x dtype size overflows 64 bits");
      }
    }
    if (t->data != nullptr && t->fill) return error(who + "both data and fill are set");
    // A zero-size tensor may come from an empty vector, whose data() can be nullptr.
    if (bytes > 0 && t->data == nullptr && !t->fill) {
      return error(who + "neither data nor fill is set");
    }
    if (__builtin_add_overflow(total, bytes, &total)) {
      return error("total size of the tensors overflows 64 bits");
    }
    sizes.push_back(bytes);
  }
  return sizes;
}

// Compact JSON with the fields in the order the reference writer uses, "__metadata__" first,
// padded with spaces so the data section starts 8-byte aligned.
std::string header_json(const TensorList& tensors, const std::vector<uint64_t>& sizes,
                        const std::map<std::string, std::string>& metadata) {
  std::string out = "{";
  if (!metadata.empty()) out += "\"__metadata__\":" + json(metadata).dump();
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorToWrite& t = *tensors[i];
    if (out.size() > 1) out += ",";
    out += json(t.name).dump() + ":{\"dtype\":\"" + std::string(dtype_name(t.dtype)) +
           "\",\"shape\":" + json(t.shape).dump() + ",\"data_offsets\":[" + std::to_string(offset) +
           "," + std::to_string(offset + sizes[i]) + "]}";
    offset += sizes[i];
  }
  out += "}";
  out.append((8 - out.size() % 8) % 8, ' ');
  return out;
}

Status append_tensor(AtomicFile& file, const TensorToWrite& t, uint64_t size) {
  if (size == 0) return Status::ok_status();
  if (t.data != nullptr) return file.append(t.data, size);
  // One tensor-sized buffer at a time: a generated checkpoint never sits whole in memory.
  std::unique_ptr<uint8_t[]> buffer(new (std::nothrow) uint8_t[size]);
  if (!buffer) {
    return error("tensor " + json_quoted(t.name) + ": cannot allocate " + std::to_string(size) +
                 " bytes to fill it");
  }
  try {
    t.fill(buffer.get());
  } catch (const std::exception& e) {
    return error("tensor " + json_quoted(t.name) + ": fill threw: " + e.what());
  } catch (...) {
    return error("tensor " + json_quoted(t.name) + ": fill threw a non-standard exception");
  }
  return file.append(buffer.get(), size);
}

// Writes already-validated tensors; on failure the temporary file is removed by ~AtomicFile.
Status write_validated(const std::string& path, const TensorList& tensors,
                       const std::vector<uint64_t>& sizes,
                       const std::map<std::string, std::string>& metadata) {
  const std::string header = header_json(tensors, sizes, metadata);
  MISTRAL_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::create(path));
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(uint64_t{header.size()} >> (8 * i));
  MISTRAL_RETURN_IF_ERROR(file->append(length, sizeof(length)));
  MISTRAL_RETURN_IF_ERROR(file->append(header.data(), header.size()));
  for (size_t i = 0; i < tensors.size(); ++i) {
    Status status = append_tensor(*file, *tensors[i], sizes[i]);
    if (!status.ok()) return status.with_context(path);
  }
  return file->commit();
}

TensorList pointers(const std::vector<TensorToWrite>& tensors) {
  TensorList out;
  out.reserve(tensors.size());
  for (const TensorToWrite& t : tensors) out.push_back(&t);
  return out;
}

// Shard file names a previous index in `dir` refers to; best effort, since an unreadable old
// index only means that its shards cannot be cleaned up. Only plain file names qualify, so a
// hostile index cannot make us delete anything outside `dir`.
std::vector<std::string> previous_shards(const fs::path& dir) {
  const std::string index = (dir / kIndexName).string();
  Result<std::shared_ptr<MappedFile>> file = MappedFile::open(index);
  if (!file.ok()) return {};
  std::string_view text(reinterpret_cast<const char*>((*file)->data()), (*file)->size());
  Result<std::vector<io_internal::WeightMapEntry>> entries =
      io_internal::parse_weight_map(text, index);
  if (!entries.ok()) return {};
  std::set<std::string> shards;
  for (const auto& entry : *entries) {
    if (entry.shard.find('/') == std::string::npos) shards.insert(entry.shard);
  }
  return {shards.begin(), shards.end()};
}

std::string shard_name(size_t k, size_t n) {
  char name[64];
  std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", k, n);
  return name;
}

}  // namespace

uint64_t TensorToWrite::num_bytes() const {
  uint64_t bytes = dtype_size(dtype);
  for (int64_t d : shape) bytes *= static_cast<uint64_t>(d);
  return bytes;
}

Status write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  const TensorList list = pointers(tensors);
  Result<std::vector<uint64_t>> sizes = validate(list, metadata);
  if (!sizes.ok()) return sizes.status().with_context(path);
  return write_validated(path, list, *sizes, metadata);
}

Status write_checkpoint_tensors(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                                uint64_t max_shard_bytes,
                                const std::map<std::string, std::string>& metadata) {
  const TensorList list = pointers(tensors);
  Result<std::vector<uint64_t>> sizes = validate(list, metadata);
  if (!sizes.ok()) return sizes.status().with_context(dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return error(dir + ": cannot create directory: " + ec.message());
  const fs::path d(dir);
  const std::vector<std::string> stale = previous_shards(d);

  // Greedy in the given order, as save_pretrained does: a shard closes when the next tensor would
  // push it past the limit; a tensor larger than the limit gets a shard of its own.
  std::vector<TensorList> shards;
  std::vector<std::vector<uint64_t>> shard_sizes;
  uint64_t current = 0, total = 0;
  for (size_t i = 0; i < list.size(); ++i) {
    if (shards.empty() || (!shards.back().empty() && current + (*sizes)[i] > max_shard_bytes)) {
      shards.emplace_back();
      shard_sizes.emplace_back();
      current = 0;
    }
    shards.back().push_back(list[i]);
    shard_sizes.back().push_back((*sizes)[i]);
    current += (*sizes)[i];
    total += (*sizes)[i];
  }

  std::set<std::string> written;
  if (shards.size() <= 1) {
    MISTRAL_RETURN_IF_ERROR(write_validated((d / kSingleName).string(), list, *sizes, metadata));
    written.insert(kSingleName);
    MISTRAL_RETURN_IF_ERROR(io_internal::remove_if_exists((d / kIndexName).string()));
  } else {
    json weight_map = json::object();
    Status status;
    for (size_t k = 0; k < shards.size(); ++k) {
      const std::string name = shard_name(k + 1, shards.size());
      status = write_validated((d / name).string(), shards[k], shard_sizes[k], metadata);
      if (!status.ok()) break;
      for (const TensorToWrite* t : shards[k]) weight_map[t->name] = name;
      written.insert(name);
    }
    // The index goes last: until it is renamed into place, readers see the previous checkpoint.
    if (status.ok()) {
      json index = {{"metadata", {{"total_size", total}}}, {"weight_map", std::move(weight_map)}};
      status = write_file_atomic((d / kIndexName).string(), index.dump(2) + "\n");
    }
    if (!status.ok()) {
      // New shard names that no index refers to would only confuse; shards the previous index
      // names are left alone (it may be one of them that we overwrote).
      for (const std::string& name : written) {
        if (std::find(stale.begin(), stale.end(), name) == stale.end()) {
          (void)io_internal::remove_if_exists((d / name).string());
        }
      }
      return status;
    }
    MISTRAL_RETURN_IF_ERROR(io_internal::remove_if_exists((d / kSingleName).string()));
  }
  for (const std::string& name : stale) {
    if (!written.count(name)) {
      MISTRAL_RETURN_IF_ERROR(io_internal::remove_if_exists((d / name).string()));
    }
  }
  return io_internal::fsync_directory(dir);
}

Status write_file_atomic(const std::string& path, std::string_view content) {
  MISTRAL_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::create(path));
  MISTRAL_RETURN_IF_ERROR(file->append(content.data(), content.size()));
  return file->commit();
}

}  // namespace mistral
