#include "backend/cuda/trace_recorder.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/trace_record.h"
#include "core/env.h"

namespace mistral::cuda {
namespace {

constexpr char kMagic[8] = {'M', 'T', 'R', 'A', 'C', 'E', '\0', '\0'};

size_t ring_bytes(uint32_t capacity) {
  return offsetof(TraceRing, records) + size_t{capacity} * sizeof(TraceRecord);
}

#if MISTRAL_CUDA_TRACE
void attach_everywhere(TraceRing* ring) {
  trace_attach_gemv_fused(ring);
  trace_attach_attention_decode(ring);
}
#endif

}  // namespace

Result<std::unique_ptr<TraceRecorder>> TraceRecorder::start_if_asked(cudaStream_t stream) {
  const char* out = std::getenv("MISTRAL_CUDA_TRACE_OUT");
  if (out == nullptr || *out == '\0') return std::unique_ptr<TraceRecorder>();
#if MISTRAL_CUDA_TRACE
  const int asked = env_int("MISTRAL_CUDA_TRACE_RECORDS", 1 << 21);
  if (asked <= 0 || asked > (1 << 28)) {
    return error("MISTRAL_CUDA_TRACE_RECORDS=" + std::to_string(asked) +
                 ": expected 1 to 268435456 records");
  }
  uint32_t capacity = 1;
  while (capacity < static_cast<uint32_t>(asked)) capacity <<= 1;
  std::unique_ptr<TraceRecorder> r(new TraceRecorder());
  r->stream_ = stream;
  r->path_ = out;
  r->capacity_ = capacity;
  MISTRAL_ASSIGN_OR_RETURN(
      r->ring_,
      DeviceBuffer::allocate(ring_bytes(capacity), "the trace ring (MISTRAL_CUDA_TRACE_RECORDS)"));
  TraceRing head{};
  head.capacity = capacity;
  MISTRAL_CUDA_CHECK(cudaMemsetAsync(r->ring_.data(), 0, ring_bytes(capacity), stream));
  MISTRAL_CUDA_CHECK(cudaMemcpyAsync(r->ring_.data(), &head, offsetof(TraceRing, records),
                                     cudaMemcpyHostToDevice, stream));
  MISTRAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  attach_everywhere(r->ring_.as<TraceRing>());
  return r;
#else
  (void)stream;
  return error(std::string("MISTRAL_CUDA_TRACE_OUT=") + out +
               ": this build has no timeline marks; configure with -DMISTRAL_CUDA=ON "
               "-DMISTRAL_CUDA_TRACE=ON to record them");
#endif
}

TraceRecorder::~TraceRecorder() {
#if MISTRAL_CUDA_TRACE
  MISTRAL_CUDA_CHECK(cudaStreamSynchronize(stream_));
  attach_everywhere(nullptr);
#endif
  const Status s = write();
  if (!s.ok()) std::fprintf(stderr, "warning: %s\n", s.message().c_str());
}

Status TraceRecorder::write() const {
  TraceRing head{};
  MISTRAL_CUDA_CHECK(
      cudaMemcpy(&head, ring_.data(), offsetof(TraceRing, records), cudaMemcpyDeviceToHost));
  const uint64_t made = head.count, capacity = capacity_;
  const uint64_t kept = made < capacity ? made : capacity;
  std::vector<TraceRecord> records(kept);  // positions 0 .. kept - 1: the rest were never written
  MISTRAL_CUDA_CHECK(cudaMemcpy(records.data(), ring_.as<uint8_t>() + offsetof(TraceRing, records),
                                records.size() * sizeof(TraceRecord), cudaMemcpyDeviceToHost));
  const uint32_t version = kTraceVersion, record_bytes = sizeof(TraceRecord);
  std::ofstream f(path_, std::ios::binary | std::ios::trunc);
  f.write(kMagic, sizeof(kMagic));
  f.write(reinterpret_cast<const char*>(&version), sizeof(version));
  f.write(reinterpret_cast<const char*>(&record_bytes), sizeof(record_bytes));
  f.write(reinterpret_cast<const char*>(&made), sizeof(made));
  f.write(reinterpret_cast<const char*>(&capacity), sizeof(capacity));
  f.write(reinterpret_cast<const char*>(records.data()),
          static_cast<std::streamsize>(kept * sizeof(TraceRecord)));
  f.close();
  if (!f) return error("MISTRAL_CUDA_TRACE_OUT=" + path_ + ": could not write the trace");
  std::fprintf(stderr, "trace: %llu marks (%llu kept) written to %s\n",
               static_cast<unsigned long long>(made), static_cast<unsigned long long>(kept),
               path_.c_str());
  return Status();
}

}  // namespace mistral::cuda
