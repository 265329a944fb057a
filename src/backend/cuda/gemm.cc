// Prefill GEMM through cuBLASLt, and the linear() dispatch between it and the decode GEMV.
//
// cuBLASLt is column-major: y[m, n] row-major is the column-major n x m matrix D = W x^T, where
// W [n, k] row-major is the column-major k x n matrix A used transposed, and x [m, k] row-major
// is the column-major k x m matrix B. bf16 A and B, float32 compute and scale, bf16 or float D.
#include <algorithm>
#include <type_traits>
#include <utility>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"
#include "core/env.h"

namespace mistral::cuda {
namespace {

// The largest power of two up to 256 dividing the address: cuBLASLt's heuristic assumes 256-byte
// aligned operands unless told otherwise, and may pick a kernel that needs it.
uint32_t alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

template <typename OutT>
constexpr cudaDataType_t out_type() {
  return std::is_same_v<OutT, float> ? CUDA_R_32F : CUDA_R_16BF;
}

// RAII for the cuBLASLt descriptors of one call.
struct LtDescs {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  ~LtDescs() {
    if (d != nullptr) MISTRAL_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(d));
    if (b != nullptr) MISTRAL_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(b));
    if (a != nullptr) MISTRAL_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(a));
    if (op != nullptr) MISTRAL_CUBLAS_CHECK(cublasLtMatmulDescDestroy(op));
  }
};

// y[m, 0:rows] (row stride ldy) = x[m, k] * w_rows[rows, k]^T, all bf16 W.
template <typename OutT>
void lt_matmul(KernelContext& ctx, const bf16* x, int64_t m, const bf16* w, int64_t rows, int64_t k,
               OutT* y, int64_t ldy) {
  LtDescs desc;
  const cudaDataType_t dtype = out_type<OutT>();
  MISTRAL_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  MISTRAL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA,
                                                      &trans_a, sizeof(trans_a)));
  MISTRAL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB,
                                                      &trans_b, sizeof(trans_b)));
  MISTRAL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&desc.a, CUDA_R_16BF, k, rows, k));
  MISTRAL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&desc.b, CUDA_R_16BF, k, m, k));
  MISTRAL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&desc.d, dtype, rows, m, ldy));

  const uint32_t align_a = alignment(w), align_b = alignment(x), align_d = alignment(y);
  const KernelContext::GemmKey key{m, rows, k, static_cast<int>(dtype), align_a, align_b, align_d};
  auto it = ctx.gemm_algos().find(key);
  if (it == ctx.gemm_algos().end()) {
    cublasLtMatmulPreference_t pref = nullptr;
    MISTRAL_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const size_t ws = ctx.cublas_workspace_bytes();
    MISTRAL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_d},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d}};
    for (const auto& [attr, value] : aligns) {
      MISTRAL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value)));
    }
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    MISTRAL_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx.cublas_lt(), desc.op, desc.a, desc.b,
                                                        desc.d, desc.d, pref, 1, &result, &found));
    MISTRAL_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    MISTRAL_CHECK(found > 0) << "cuBLASLt has no algorithm for bf16 GEMM m=" << m << " n=" << rows
                             << " k=" << k;
    it = ctx.gemm_algos().emplace(key, result.algo).first;
  }
  const float alpha = 1.0f, beta = 0.0f;
  MISTRAL_CUBLAS_CHECK(cublasLtMatmul(ctx.cublas_lt(), desc.op, &alpha, w, desc.a, x, desc.b, &beta,
                                      y, desc.d, y, desc.d, &it->second, ctx.cublas_workspace(),
                                      ctx.cublas_workspace_bytes(), ctx.stream()));
}

// The most bytes of a dequantized tile: MISTRAL_DEQUANT_TILE_MB, else kDequantTileMB.
size_t dequant_tile_bytes() {
  static const int tile_mb = env_int("MISTRAL_DEQUANT_TILE_MB", kDequantTileMB);
  return size_t(std::max(tile_mb, 1)) << 20;
}

template <typename OutT>
void gemm_impl(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, OutT* y) {
  MISTRAL_CHECK(m >= 1 && w.n >= 1 && w.k >= 1) << "gemm m=" << m << " n=" << w.n << " k=" << w.k;
  if (w.format == WeightFormat::kBF16) {
    lt_matmul(ctx, x, m, static_cast<const bf16*>(w.data), w.n, w.k, y, w.n);
    return;
  }
  const int64_t chunk = dequant_tile_rows(w.n, w.k, ctx.scratch_bytes(), dequant_tile_bytes());
  MISTRAL_CHECK(chunk > 0) << "gemm of a " << weight_format_name(w.format)
                           << " weight with k=" << w.k << " needs at least "
                           << 16 * w.k * int64_t(sizeof(bf16))
                           << " bytes of scratch; call reserve_scratch first";
  auto* tile = static_cast<bf16*>(ctx.scratch());
  for (int64_t r0 = 0; r0 < w.n; r0 += chunk) {
    const int64_t rows = std::min(chunk, w.n - r0);
    dequantize(ctx, w, r0, r0 + rows, tile);
    lt_matmul(ctx, x, m, tile, rows, w.k, y + r0, w.n);
  }
}

}  // namespace

int64_t dequant_tile_rows(int64_t n, int64_t k, size_t scratch_bytes, size_t tile_bytes) {
  const int64_t row_bytes = k * static_cast<int64_t>(sizeof(bf16));
  const auto scratch = static_cast<int64_t>(scratch_bytes);
  const int64_t budget = std::min(scratch, static_cast<int64_t>(tile_bytes));
  const int64_t most =
      std::min(std::max<int64_t>(budget / row_bytes / 16, 1) * 16, scratch / row_bytes / 16 * 16);
  if (most < 16) return 0;
  const int64_t tiles = (n + most - 1) / most;
  return std::min(most, ((n + tiles - 1) / tiles + 15) / 16 * 16);
}

size_t gemm_scratch_bytes(const DeviceWeight& w) {
  if (w.format == WeightFormat::kBF16) return 0;
  const int64_t rows = dequant_tile_rows(w.n, w.k, SIZE_MAX / 2, dequant_tile_bytes());
  return static_cast<size_t>(rows * w.k) * sizeof(bf16);
}

void gemm(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, float* y) {
  gemm_impl(ctx, x, m, w, y);
}
void gemm(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, bf16* y) {
  gemm_impl(ctx, x, m, w, y);
}

// The most rows of x linear() gives the GEMV: kMaxGemvRows, or MISTRAL_GEMV_MAX_ROWS (0 to
// kMaxGemvRows) for comparisons of the two paths.
static int64_t gemv_max_rows() {
  static const int64_t rows = std::clamp<int64_t>(
      env_int("MISTRAL_GEMV_MAX_ROWS", static_cast<int>(kMaxGemvRows)), 0, kMaxGemvRows);
  return rows;
}

template <typename OutT>
static void linear_impl(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w,
                        OutT* y) {
  if (m <= gemv_max_rows()) {
    gemv(ctx, x, m, w, y);
  } else if (w.format != WeightFormat::kBF16 && m <= gemm_mixed_max_rows()) {
    gemm_mixed(ctx, x, m, w, y);
  } else {
    gemm(ctx, x, m, w, y);
  }
}

void linear(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, float* y) {
  linear_impl(ctx, x, m, w, y);
}
size_t linear_scratch_bytes(const KernelContext& ctx, const DeviceWeight& w, int64_t m) {
  if (m <= gemv_max_rows()) return gemv_scratch_bytes(ctx, w);  // linear_impl's choice
  return std::max(gemm_scratch_bytes(w), gemm_mixed_scratch_bytes(ctx, w));
}
void linear(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, bf16* y) {
  linear_impl(ctx, x, m, w, y);
}

}  // namespace mistral::cuda
