// libFuzzer target: the weight_map parser of `*.safetensors.index.json` on arbitrary bytes. Every
// shard path it accepts must stay inside the index's directory.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "io/index_parse.h"

namespace {

void require(bool condition) {
  if (!condition) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto entries = mistral::io_internal::parse_weight_map(text, "fuzz.index.json");
  if (!entries.ok()) {
    require(entries.status().message().rfind("fuzz.index.json: ", 0) == 0);
    return 0;
  }
  require(!entries->empty());
  for (size_t i = 0; i < entries->size(); ++i) {
    const auto& e = (*entries)[i];
    if (i > 0) require((*entries)[i - 1].tensor < e.tensor);
    require(!e.shard.empty() && e.shard[0] != '/');
    require(e.shard != ".." && e.shard.rfind("../", 0) != 0);
    require(e.shard.find("/../") == std::string_view::npos);
    require(e.shard.size() < 3 || e.shard.compare(e.shard.size() - 3, 3, "/..") != 0);
    auto again = mistral::io_internal::normalize_shard_path(e.shard);
    require(again.ok() && *again == e.shard);
  }
  return 0;
}
