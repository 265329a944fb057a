#include "io/weight_source.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <system_error>

#include "io/index_parse.h"
#include "io/strict_json.h"

namespace mistral {
namespace {

namespace fs = std::filesystem;
using io_internal::json_quoted;

// True when `path` exists; an error for anything other than "does not exist" (e.g. EACCES), so
// that a permission problem is not reported as a missing checkpoint.
Result<bool> path_exists(const fs::path& path) {
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return error(path.string() + ": " + ec.message());
  }
  return fs::exists(st);
}

bool by_name(const std::pair<std::string, TensorView>& a,
             const std::pair<std::string, TensorView>& b) {
  return a.first < b.first;
}

}  // namespace

Result<WeightSource> WeightSource::open_hf_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return error(dir + ": not a directory" + (ec ? " (" + ec.message() + ")" : ""));
  }
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  MISTRAL_ASSIGN_OR_RETURN(bool has_index, path_exists(index));
  if (has_index) return open_index(index.string());
  const fs::path single = fs::path(dir) / "model.safetensors";
  MISTRAL_ASSIGN_OR_RETURN(bool has_single, path_exists(single));
  if (has_single) return open_file(single.string());
  // PyTorch .bin files are pickles, i.e. code: they are never loaded, only pointed out.
  std::string pickle_hint;
  for (const char* name : {"pytorch_model.bin", "pytorch_model.bin.index.json"}) {
    if (fs::exists(fs::path(dir) / name, ec)) {
      pickle_hint = std::string("; found ") + name +
                    ", a pickle file, which is never loaded (it can run code): convert it to "
                    "safetensors first";
      break;
    }
  }
  return error(dir +
               ": no Hugging Face checkpoint: looked for model.safetensors.index.json and "
               "model.safetensors (other *.safetensors files are never guessed at; open Mistral's "
               "consolidated.safetensors as a single file)" +
               pickle_hint);
}

Result<WeightSource> WeightSource::open_file(const std::string& path) {
  MISTRAL_ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> file, SafetensorsFile::open(path));
  WeightSource source;
  source.description_ = path;
  for (const TensorInfo& info : file->tensors()) {
    source.tensors_.push_back(
        {info.name, TensorView{&info, file->tensor_data(info), &file->path()}});
  }
  std::sort(source.tensors_.begin(), source.tensors_.end(), by_name);
  source.files_.push_back(std::move(file));
  return source;
}

Result<WeightSource> WeightSource::open_index(const std::string& index_path) {
  MISTRAL_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> index_file, MappedFile::open(index_path));
  std::string_view text(reinterpret_cast<const char*>(index_file->data()), index_file->size());
  MISTRAL_ASSIGN_OR_RETURN(std::vector<io_internal::WeightMapEntry> entries,
                           io_internal::parse_weight_map(text, index_path));

  // Each distinct shard is opened once, whatever the number of tensors naming it.
  const fs::path dir = fs::path(index_path).parent_path();
  std::map<std::string, std::shared_ptr<SafetensorsFile>> shards;
  for (const auto& entry : entries) {
    if (shards.count(entry.shard)) continue;
    Result<std::shared_ptr<SafetensorsFile>> file =
        SafetensorsFile::open((dir / entry.shard).string());
    if (!file.ok()) {
      return file.status().with_context(index_path + ": shard " + json_quoted(entry.shard) +
                                        " (named for tensor " + json_quoted(entry.tensor) + ")");
    }
    shards.emplace(entry.shard, std::move(file).value());
  }

  // Where each tensor really is, so that the map can be checked against the shards both ways.
  std::map<std::string_view, const std::string*> found_in;
  for (const auto& [shard, file] : shards) {
    for (const TensorInfo& info : file->tensors()) {
      auto [it, inserted] = found_in.emplace(info.name, &shard);
      if (!inserted) {
        return error(index_path + ": tensor " + json_quoted(info.name) +
                     " is present in both shard " + json_quoted(*it->second) + " and shard " +
                     json_quoted(shard));
      }
    }
  }

  WeightSource source;
  source.description_ = index_path;
  for (const auto& entry : entries) {
    const SafetensorsFile& file = *shards.at(entry.shard);
    const TensorInfo* info = file.find(entry.tensor);
    if (info == nullptr) {
      auto elsewhere = found_in.find(entry.tensor);
      std::string hint = elsewhere == found_in.end()
                             ? " (no listed shard has it)"
                             : " (it is in shard " + json_quoted(*elsewhere->second) + ")";
      return error(index_path + ": weight_map puts tensor " + json_quoted(entry.tensor) +
                   " in shard " + json_quoted(entry.shard) + ", which does not contain it" + hint);
    }
    source.tensors_.push_back(
        {entry.tensor, TensorView{info, file.tensor_data(*info), &file.path()}});
  }
  if (found_in.size() != entries.size()) {
    // Every map entry matched a distinct tensor above, so some shard tensor is unmapped.
    for (const auto& [shard, file] : shards) {
      for (const TensorInfo& info : file->tensors()) {
        auto it = std::lower_bound(source.tensors_.begin(), source.tensors_.end(),
                                   std::pair<std::string, TensorView>{info.name, {}}, by_name);
        if (it == source.tensors_.end() || it->first != info.name) {
          return error(index_path + ": tensor " + json_quoted(info.name) + " is in shard " +
                       json_quoted(shard) + " but absent from weight_map");
        }
      }
    }
  }
  for (auto& [shard, file] : shards) source.files_.push_back(std::move(file));
  return source;
}

const TensorView* WeightSource::find(std::string_view name) const {
  auto it = std::lower_bound(
      tensors_.begin(), tensors_.end(), name,
      [](const std::pair<std::string, TensorView>& a, std::string_view n) { return a.first < n; });
  if (it == tensors_.end() || it->first != name) return nullptr;
  return &it->second;
}

std::vector<std::string> WeightSource::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, view] : tensors_) out.push_back(name);
  return out;
}

}  // namespace mistral
