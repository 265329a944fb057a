// Host-side pieces shared by the launchers of the tensor-core linear kernels (gemv.cu,
// gemm_mixed.cu): the checks they make on W, and the operand fields of y[m, n] = x[m, k] * W^T
// that both kernels' argument structs carry under the same names.
#pragma once

#include <cstdint>

#include "backend/cuda/kernels.h"
#include "core/check.h"

namespace mistral::cuda {

// W: a positive shape, k < 2^30 and a multiple of 8 (bf16) or 32 (int8 / int4, with scales),
// data 16-byte aligned. An error names the failed condition.
inline void check_linear_weight(const DeviceWeight& w) {
  MISTRAL_CHECK(w.n > 0 && w.k > 0) << "weight shape [" << w.n << ", " << w.k << "]";
  MISTRAL_CHECK(w.k < (int64_t{1} << 30)) << "weight k = " << w.k << " too large";
  MISTRAL_CHECK(reinterpret_cast<uintptr_t>(w.data) % 16 == 0) << "weight data not 16-byte aligned";
  if (w.format == WeightFormat::kBF16) {
    MISTRAL_CHECK(w.k % 8 == 0) << "bf16 weight k = " << w.k << " is not a multiple of 8";
  } else {
    MISTRAL_CHECK(w.k % kQuantGroup == 0)
        << weight_format_name(w.format) << " weight k = " << w.k << " is not a multiple of 32";
    MISTRAL_CHECK(w.scales != nullptr) << "quantized weight without scales";
  }
}

// Sets a's x, m, n, k, w, row_bytes (W's bytes per row as stored), scales and groups (scale
// groups per row) for m rows of x (16-byte aligned) and a checked W, each in its field's type.
template <typename Args>
void set_linear_operands(Args& a, const bf16* x, int64_t m, const DeviceWeight& w) {
  MISTRAL_CHECK(reinterpret_cast<uintptr_t>(x) % 16 == 0) << "x not 16-byte aligned";
  a.x = x;
  a.m = static_cast<decltype(a.m)>(m);
  a.n = w.n;
  a.k = static_cast<decltype(a.k)>(w.k);
  a.w = static_cast<const uint8_t*>(w.data);
  a.row_bytes = static_cast<decltype(a.row_bytes)>(w.data_bytes() / w.n);
  a.scales = w.scales;
  a.groups = static_cast<decltype(a.groups)>(w.k / kQuantGroup);
}

}  // namespace mistral::cuda
