// The default implementations of Backend (backend.h): the fused ops as the separate ops in turn,
// and a download that copies at once.
#include "backend/backend.h"

#include <cstring>
#include <vector>

#include "core/check.h"

namespace mistral {

namespace {

// The bytes, already on the host.
class CopiedDownload final : public Download {
 public:
  explicit CopiedDownload(std::vector<uint8_t> bytes) : bytes_(std::move(bytes)) {}
  void wait(void* dst_host) override {
    if (!bytes_.empty()) std::memcpy(dst_host, bytes_.data(), bytes_.size());
  }

 private:
  std::vector<uint8_t> bytes_;
};

}  // namespace

std::unique_ptr<Download> Backend::start_download(const void* src, size_t bytes) {
  std::vector<uint8_t> host(bytes);
  to_host(host.data(), src, bytes);
  return std::make_unique<CopiedDownload>(std::move(host));
}

void Backend::fused_matmul(const void* x, int64_t m, const Tensor& w, void* y,
                           const MatmulFusion& fusion) {
  MISTRAL_CHECK(!(fusion.swiglu && fusion.residual))
      << "fused_matmul: swiglu and residual do not combine";
  const int64_t n = w.shape.at(0), k = w.shape.at(1);
  const size_t act = dtype_size(activation_dtype());
  auto* scratch = static_cast<uint8_t*>(fusion.scratch);
  const void* input = x;
  if (fusion.norm != nullptr) {
    MISTRAL_CHECK(scratch != nullptr) << "fused_matmul: a norm needs scratch";
    rmsnorm(x, m, *fusion.norm, fusion.eps, scratch);
    input = scratch;
  }
  if (!fusion.swiglu && !fusion.residual) return matmul(input, m, w, y);
  MISTRAL_CHECK(scratch != nullptr) << "fused_matmul: swiglu and residual need scratch";
  uint8_t* product = scratch + m * k * act;
  matmul(input, m, w, product);
  if (fusion.residual) return add(y, product, m * n);
  MISTRAL_CHECK(n % 2 == 0) << "fused_matmul: swiglu needs an even number of rows, got " << n;
  const int64_t half = n / 2;
  for (int64_t r = 0; r < m; ++r) {
    silu_mul(product + r * n * act, product + (r * n + half) * act,
             static_cast<uint8_t*>(y) + r * half * act, half);
  }
}

}  // namespace mistral
