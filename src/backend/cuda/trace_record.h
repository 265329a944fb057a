// The records of the decode timeline (trace.cuh writes them on the device, TraceRecorder copies
// them to a file, bench/cuda/trace_timeline.py reads that file). Plain structs shared by host and
// device code; the layout is the file format, so a change here is a change of kTraceVersion.
#pragma once

#include <cstdint>

namespace mistral::cuda {

// One mark: thread 0 of a block passing a point of a kernel, at %globaltimer (ns).
struct TraceRecord {
  uint64_t ns;
  uint32_t block;   // blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z)
  uint16_t kernel;  // trace_gemv_code / kTraceAttention (below)
  uint8_t point;    // the kernel's points, in order (trace.cuh lists them)
  uint8_t sm;       // %smid
};
static_assert(sizeof(TraceRecord) == 16, "the file format");

// The ring in device memory: `count` records were reserved so far; record i is at
// records[i % capacity] (capacity a power of two), so the ring holds the last `capacity`.
struct TraceRing {
  uint32_t count;
  uint32_t capacity;
  uint64_t reserved;  // keeps records 16-byte aligned
  TraceRecord records[1];
};

constexpr uint32_t kTraceVersion = 1;

// Kernel codes: bits 12-15 the kernel; for the fused GEMV, bits 10-11 the weight format
// (WeightFormat), bit 9 a norm, bits 7-8 the output (GemvOutput), bits 0-6 min(k / 1024, 127).
constexpr uint16_t kTraceGemv = 1u << 12;
constexpr uint16_t kTraceAttention = 2u << 12;
constexpr uint16_t trace_gemv_code(int format, bool norm, int output, int64_t k) {
  const int64_t size = k / 1024 < 127 ? k / 1024 : 127;
  return static_cast<uint16_t>(kTraceGemv | (format << 10) | (norm ? 1 << 9 : 0) | (output << 7) |
                               size);
}

}  // namespace mistral::cuda
