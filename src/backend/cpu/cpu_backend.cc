#include <memory>

#include "backend/backend.h"
#include "backend/cpu/ops.h"

namespace mistral {
namespace {

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  void matmul(const float* x, int64_t m, const Tensor& w, float* y) override {
    cpu::matmul(x, m, w, y);
  }
  void embed(const Tensor& table, const int32_t* ids, int64_t n, float* out) override {
    cpu::embed(table, ids, n, out);
  }
  void rmsnorm(const float* x, int64_t m, const Tensor& weight, float eps, float* y) override {
    cpu::rmsnorm(x, m, weight, eps, y);
  }
  void rope(float* x, int64_t tokens, int64_t heads, int64_t head_dim, const int64_t* positions,
            double theta) override {
    cpu::rope(x, tokens, heads, head_dim, positions, theta);
  }
  void attention(const AttentionArgs& args) override { cpu::attention(args); }
  void silu_mul(const float* gate, const float* up, float* out, int64_t n) override {
    cpu::silu_mul(gate, up, out, n);
  }
  void add(float* x, const float* y, int64_t n) override { cpu::add(x, y, n); }
  bool supports_weight_dtype(DType dtype) const override {
    return dtype == DType::kF32 || dtype == DType::kBF16;
  }
  bool supports_quantization(QuantType type) const override { return true; }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace mistral
