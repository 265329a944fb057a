// libFuzzer target: parse_safetensors_header on arbitrary bytes must return a Status rather than
// crash, and whatever it accepts must satisfy the invariants that loaders rely on (checked here,
// so that a too-lenient parser shows up as a crash, not just a memory error).
#include <cstddef>
#include <cstdint>

#include "io/safetensors.h"

namespace {

void require(bool condition) {
  if (!condition) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto header = mistral::parse_safetensors_header(data, size, "fuzz.safetensors");
  if (!header.ok()) {
    require(header.status().message().rfind("fuzz.safetensors: ", 0) == 0);
    return 0;
  }
  require(header->data_section_offset >= 8 + 2 && header->data_section_offset <= size);
  uint64_t expected = 0;
  volatile uint8_t sink = 0;
  for (const mistral::TensorInfo& t : header->tensors) {
    require(t.data_begin == expected && t.data_end >= t.data_begin);
    for (int64_t d : t.shape) require(d >= 0);
    require(t.num_bytes() == t.num_elements() * mistral::dtype_size(t.dtype));
    // Reading the first and last byte lets ASan catch a span outside the buffer.
    if (t.num_bytes() > 0) {
      sink = sink ^ data[header->data_section_offset + t.data_begin];
      sink = sink ^ data[header->data_section_offset + t.data_end - 1];
    }
    expected = t.data_end;
  }
  require(header->data_section_offset + expected == size);
  return 0;
}
