// The CPU backend: host memory, F32 activations, the kernels of ops.h on the global ThreadPool.
#include <cstdlib>
#include <cstring>
#include <memory>

#include "backend/backend.h"
#include "backend/cpu/ops.h"

namespace mistral {
namespace {

const float* f32(const void* p) { return static_cast<const float*>(p); }
float* f32(void* p) { return static_cast<float*>(p); }

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  DType activation_dtype() const override { return DType::kF32; }

  Result<Buffer> allocate(size_t bytes, const std::string& what) override {
    const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (p == nullptr) {
      return error(what + ": out of host memory allocating " + std::to_string(bytes) + " bytes");
    }
    Buffer b;
    b.owner = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
    b.data = p;
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
