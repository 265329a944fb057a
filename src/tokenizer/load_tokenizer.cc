// Choosing the tokenizer file of a checkpoint directory the way Mistral's tooling does.
#include <algorithm>
#include <filesystem>
#include <system_error>

#include "tokenizer/tokenizer.h"

namespace mistral {
namespace {

namespace fs = std::filesystem;

// mistral-common's sentencepiece suffixes: ".model" or ".model.v<N>" optionally followed by a
// multimodal version "m<M>" (is_sentencepiece / _filter_valid_tokenizer_files).
bool is_sentencepiece_name(const std::string& name) {
  static const char* kVersions[] = {"v1", "v2", "v3", "v7", "v11", "v13", "v15"};
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with(".model")) return true;
  for (const char* v : kVersions) {
    if (ends_with(std::string(".model.") + v) || ends_with(std::string(".model.") + v + "m1")) {
      return true;
    }
  }
  return false;
}

bool is_tekken_name(const std::string& name) {
  return name.find("tekken") != std::string::npos && name.size() > 5 &&
         name.compare(name.size() - 5, 5, ".json") == 0;
}

}  // namespace

const char* instruct_version_name(InstructVersion version) {
  switch (version) {
    case InstructVersion::kNone:
      return "none";
    case InstructVersion::kV1:
      return "v1";
    case InstructVersion::kV2:
      return "v2";
    case InstructVersion::kV3:
      return "v3";
    case InstructVersion::kV7:
      return "v7";
    case InstructVersion::kV11:
      return "v11";
    case InstructVersion::kV13:
      return "v13";
  }
  return "unknown";
}

Result<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) {
    const std::string name = fs::path(path).filename().string();
    if (is_tekken_name(name)) return load_tekken_tokenizer(path);
    if (is_sentencepiece_name(name)) return load_sentencepiece_tokenizer(path);
    if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".json") == 0) {
      return load_hf_tokenizer(path);
    }
    return error(path + ": not a tokenizer file name (tekken*.json, *.model[.vN], *.json)");
  }
  if (!fs::is_directory(path, ec)) return error(path + ": no such file or directory");

  std::vector<std::string> names;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec)) names.push_back(it->path().filename().string());
  }
  if (ec) return error(path + ": cannot list directory: " + ec.message());
  std::sort(names.begin(), names.end());
  const std::string dir = path.back() == '/' ? path : path + "/";

  // 1. tekken.json wins (get_one_valid_tokenizer_file).
  if (std::find(names.begin(), names.end(), "tekken.json") != names.end()) {
    return load_tekken_tokenizer(dir + "tekken.json");
  }
  // 2. SentencePiece files: the last in sorted order, so tokenizer.model.v3 beats tokenizer.model.
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    if (is_sentencepiece_name(*it)) return load_sentencepiece_tokenizer(dir + *it);
  }
  // 3. Other tekken files (mistral-common's is_tekken accepts any "*tekken*.json").
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    if (is_tekken_name(*it)) return load_tekken_tokenizer(dir + *it);
  }
  // 4. Hugging Face tokenizer.json (a checkpoint converted without Mistral's own files).
  if (std::find(names.begin(), names.end(), "tokenizer.json") != names.end()) {
    return load_hf_tokenizer(dir + "tokenizer.json");
  }
  return error(path + ": no tokenizer file (tekken.json, tokenizer.model[.vN], tokenizer.json)");
}

}  // namespace mistral
