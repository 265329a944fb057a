// The CPU backend: host memory, F32 activations, the kernels of ops.h on the global ThreadPool.
// Weights are used where the loader put them (memory-mapped or converted), except int4 matrices
// on a CPU with AVX-512 VNNI: place_weight copies them into 16-row tiles (QuantLayout::
// kInt4Tiles16, backend/cpu/int4_tiles.h), and place_concatenated joins the int4 matrices of one
// input (q/k/v, gate/up) into one tiled matrix. MISTRAL_CPU_INT4_TILES=0 keeps the row layout.
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>

#include "backend/backend.h"
#include "backend/cpu/cpu_features.h"
#include "backend/cpu/ops.h"
#include "core/env.h"
#include "core/quant.h"

namespace mistral {
namespace {

const float* f32(const void* p) { return static_cast<const float*>(p); }
float* f32(void* p) { return static_cast<float*>(p); }

// An int4 matrix of whole 16-row blocks that the tile kernels would read faster.
bool wants_int4_tiles(const Tensor& w) {
  static const bool enabled = env_enabled("MISTRAL_CPU_INT4_TILES");
  return enabled && cpu::cpu_features().avx512_vnni() && w.quant == QuantType::kInt4 &&
         w.layout == QuantLayout::kRows && !w.on_device && w.shape.size() == 2 &&
         w.shape[0] >= kInt4TileRows;
}

// Host memory for activations and packed weights, 64-byte aligned, not zeroed. (Transparent huge
// pages made the first touch of 4 GB take 9 s instead of 2 on the Zen 4 VM: the hypervisor backs
// guest memory on first use.)
Result<std::shared_ptr<uint8_t>> allocate_host(size_t bytes, const std::string& what) {
  const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) {
    return error(what + ": out of host memory allocating " + std::to_string(bytes) + " bytes");
  }
  return std::shared_ptr<uint8_t>(static_cast<uint8_t*>(p), [](uint8_t* q) { std::free(q); });
}

// The int4 matrices `hosts` (equal in_features) tiled one after another in one new buffer:
// that matrix, then a view of each part. Each source is read in at once before it is packed
// (one madvise instead of a page fault per 4 KiB of a memory-mapped checkpoint).
Result<std::vector<Tensor>> pack_tiles(const std::vector<Tensor>& hosts, const std::string& what) {
  const int64_t k = hosts.front().shape[1];
  int64_t rows = 0;
  size_t value_bytes = 0, scale_bytes = 0;
  for (const Tensor& h : hosts) {
    rows += h.shape[0];
    value_bytes += h.value_bytes();
    scale_bytes += h.scale_bytes();
  }
  MISTRAL_ASSIGN_OR_RETURN(std::shared_ptr<uint8_t> buffer,
                           allocate_host(value_bytes + scale_bytes, what));
  uint8_t* v = buffer.get();
  auto* s = reinterpret_cast<F16*>(buffer.get() + value_bytes);
  std::vector<Tensor> placed = {make_quantized_view(QuantType::kInt4, {rows, k}, v, s, buffer)};
  for (const Tensor& h : hosts) {
#ifdef MADV_POPULATE_READ
    for (auto [p, n] : {std::pair{h.data, h.value_bytes()}, {h.scales, h.scale_bytes()}}) {
      const uintptr_t page = 4096, begin = reinterpret_cast<uintptr_t>(p) / page * page;
      ::madvise(reinterpret_cast<void*>(begin), reinterpret_cast<uintptr_t>(p) + n - begin,
                MADV_POPULATE_READ);
    }
#endif
    pack_int4_tiles(h, v, s);
    placed.push_back(make_quantized_view(QuantType::kInt4, h.shape, v, s, buffer));
    v += h.value_bytes();
    s += h.scale_bytes() / sizeof(F16);
  }
  for (Tensor& t : placed) t.layout = QuantLayout::kInt4Tiles16;
  return placed;
}

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  DType activation_dtype() const override { return DType::kF32; }

  Result<Tensor> place_weight(const Tensor& host, WeightUse use, const std::string& what) override {
    if (use != WeightUse::kMatrix || !wants_int4_tiles(host)) return host;
    MISTRAL_ASSIGN_OR_RETURN(std::vector<Tensor> placed, pack_tiles({host}, what));
    return placed[1];
  }
  // Joins int4 matrices whose row counts are multiples of 16: the tiled whole is then the tiled
  // parts one after another, and each part is a view of it.
  Result<std::vector<Tensor>> place_concatenated(const std::vector<Tensor>& hosts,
                                                 const std::string& what) override {
    for (const Tensor& h : hosts) {
      if (!wants_int4_tiles(h) || h.shape[1] != hosts.front().shape[1] ||
          h.shape[0] % kInt4TileRows != 0) {
        return std::vector<Tensor>();
      }
    }
    if (hosts.empty()) return std::vector<Tensor>();
    return pack_tiles(hosts, what);
  }

  Result<Buffer> allocate(size_t bytes, const std::string& what) override {
    MISTRAL_ASSIGN_OR_RETURN(std::shared_ptr<uint8_t> memory, allocate_host(bytes, what));
    Buffer b;
    b.data = memory.get();
    b.owner = std::move(memory);
    b.bytes = bytes;
    return b;
  }
  void to_device(void* dst, const void* src, size_t bytes) override {
    if (bytes != 0 && dst != src) std::memmove(dst, src, bytes);
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    if (bytes != 0 && dst != src) std::memmove(dst, src, bytes);
  }

  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes != 0 && dst != src) std::memmove(dst, src, bytes);
  }

  void matmul(const void* x, int64_t m, const Tensor& w, void* y) override {
    cpu::matmul(f32(x), m, w, f32(y));
  }
  void matmul_f32_out(const void* x, int64_t m, const Tensor& w, float* y) override {
    cpu::matmul(f32(x), m, w, y);
  }
  void embed(const Tensor& table, const int32_t* ids, int64_t n, void* out) override {
    cpu::embed(table, ids, n, f32(out));
  }
  void rmsnorm(const void* x, int64_t m, const Tensor& weight, float eps, void* y) override {
    cpu::rmsnorm(f32(x), m, weight, eps, f32(y));
  }
  void rope(void* x, int64_t tokens, int64_t heads, int64_t head_dim, const int64_t* positions,
            double theta) override {
    cpu::rope(f32(x), tokens, heads, head_dim, positions, theta);
  }
  void attention(const AttentionArgs& args) override { cpu::attention(args); }
  void store_kv(const KvWriteArgs& args) override { cpu::store_kv(args); }
  void record_kv_slots(int64_t batch, int64_t new_tokens, int64_t first_seq_index,
                       const int64_t* /*first_seq_index_device*/, int64_t capacity,
                       const uint8_t* new_valid, int64_t* slot_seq_index,
                       uint8_t* slot_valid) override {
    cpu::record_kv_slots(batch, new_tokens, first_seq_index, capacity, new_valid, slot_seq_index,
                         slot_valid);
  }
  void silu_mul(const void* gate, const void* up, void* out, int64_t n) override {
    cpu::silu_mul(f32(gate), f32(up), f32(out), n);
  }
  void add(void* x, const void* y, int64_t n) override { cpu::add(f32(x), f32(y), n); }

  bool supports_weight_dtype(DType dtype) const override {
    return dtype == DType::kF32 || dtype == DType::kBF16;
  }
  DType preferred_weight_dtype() const override { return DType::kF32; }
  bool supports_quantization(QuantType type) const override { return true; }
  bool supports_kv_cache_dtype(DType dtype) const override {
    return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16 ||
           dtype == DType::kI8;
  }
  DType default_kv_cache_dtype() const override { return DType::kF32; }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace mistral
