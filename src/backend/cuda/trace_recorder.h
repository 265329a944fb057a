// TraceRecorder: the decode timeline of a diagnostic build (cmake -DMISTRAL_CUDA_TRACE=ON;
// trace.cuh says what is marked). Asked for by the environment:
//   MISTRAL_CUDA_TRACE_OUT=FILE      where the records go when the backend is destroyed
//   MISTRAL_CUDA_TRACE_RECORDS=N     ring size in records (default 2^21, 32 MiB; rounded up to a
//                                    power of two), so the file holds the last N marks
// The file: "MTRACE\0\0", u32 version (kTraceVersion), u32 record size, u64 marks made, u64 ring
// capacity, then ring positions 0 .. min(made, capacity) - 1 (trace_record.h). Mark i is at
// position i % capacity, so once the ring has wrapped the oldest is at made % capacity; a block's
// marks are consecutive marks. bench/cuda/trace_timeline.py reads it.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "backend/cuda/device_buffer.h"
#include "core/status.h"

namespace mistral::cuda {

class TraceRecorder {
 public:
  // A recorder when MISTRAL_CUDA_TRACE_OUT is set and this build has the marks; nullptr when it is
  // not set. Set in a build without the marks: an error saying how to build them.
  static Result<std::unique_ptr<TraceRecorder>> start_if_asked(cudaStream_t stream);
  // Waits for the stream, then writes the file (a failure to write is reported on stderr: the
  // trace is a diagnostic and the run's own results stand).
  ~TraceRecorder();
  TraceRecorder(const TraceRecorder&) = delete;
  TraceRecorder& operator=(const TraceRecorder&) = delete;

 private:
  TraceRecorder() = default;
  Status write() const;

  cudaStream_t stream_ = nullptr;
  std::string path_;
  DeviceBuffer ring_;
  uint32_t capacity_ = 0;
};

}  // namespace mistral::cuda
