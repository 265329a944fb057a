#include "io/index_parse.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "io/strict_json.h"

namespace mistral::io_internal {

Result<std::string> normalize_shard_path(std::string_view path) {
  if (path.empty()) return error("shard path is empty");
  if (path.find('\0') != std::string_view::npos) return error("shard path contains a NUL byte");
  if (path.front() == '/') return error("shard path is absolute");
  const std::filesystem::path p(path);
  for (const auto& component : p) {
    if (component == "..") return error("shard path has a \"..\" component");
  }
  std::string normal = p.lexically_normal().string();
  if (normal.empty() || normal == "." || normal.back() == '/') {
    return error("shard path names a directory, not a file");
  }
  return normal;
}

Result<std::vector<WeightMapEntry>> parse_weight_map(std::string_view text,
                                                     const std::string& source) {
  Result<nlohmann::json> parsed = parse_json_strict(text);
  if (!parsed.ok()) return parsed.status().with_context(source);
  const nlohmann::json& root = *parsed;
  if (!root.is_object()) {
    return error(source + ": index is " + describe_type(root) + ", expected a JSON object");
  }
  auto map = root.find("weight_map");
  if (map == root.end()) return error(source + ": missing field 'weight_map'");
  if (!map->is_object()) {
    return error(source + ": field 'weight_map' is " + describe_type(*map) +
                 ", expected an object of tensor name -> shard file");
  }
  if (map->empty()) return error(source + ": field 'weight_map' is empty");
  std::vector<WeightMapEntry> entries;
  for (const auto& [tensor, shard] : map->items()) {
    const std::string who = source + ": weight_map: tensor " + json_quoted(tensor) + ": ";
    if (!shard.is_string()) {
      return error(who + "shard is " + describe_type(shard) + ", expected a file name string");
    }
    const std::string& path = shard.get_ref<const std::string&>();
    Result<std::string> normal = normalize_shard_path(path);
    if (!normal.ok()) return normal.status().with_context(who + "shard " + json_quoted(path));
    entries.push_back({tensor, std::move(normal).value()});
  }
  return entries;
}

}  // namespace mistral::io_internal
