// WeightSource: every tensor of a checkpoint directory, by name, memory-mapped. Opens either a
// single file or the shards listed by a Hugging Face `*.safetensors.index.json`; it never globs
// `*.safetensors` (Mistral v0.3 repositories ship two weight sets side by side). Immutable after
// open, so safe to share between threads; keeps its files mapped while it lives.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "io/safetensors.h"

namespace mistral {

struct TensorView {
  const TensorInfo* info = nullptr;
  const uint8_t* data = nullptr;
  const std::string* file = nullptr;  // path of the file holding it, for error messages
};

class WeightSource {
 public:
  // Hugging Face layout in `dir`: model.safetensors.index.json if present, else model.safetensors.
  static Result<WeightSource> open_hf_dir(const std::string& dir);
  // One index file: validates weight_map (no "..", no absolute paths, every shard present, every
  // tensor in the shard the map names and in no other, no tensor in a shard that the map omits).
  static Result<WeightSource> open_index(const std::string& index_path);
  // A single safetensors file (also Mistral's native consolidated.safetensors).
  static Result<WeightSource> open_file(const std::string& path);

  // nullptr when absent.
  const TensorView* find(std::string_view name) const;
  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  // Maps every file's pages now (see MappedFile::prefault); call once the tensors are validated.
  void prefault() const {
    for (const auto& f : files_) f->prefault();
  }
  // Whether p points into one of the source's file mappings.
  bool maps(const void* p) const {
    for (const auto& f : files_) {
      if (f->maps(p)) return true;
    }
    return false;
  }
  // A short description for messages: the index or file path opened.
  const std::string& description() const { return description_; }

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::vector<std::pair<std::string, TensorView>> tensors_;  // sorted by name
  std::string description_;
};

}  // namespace mistral
