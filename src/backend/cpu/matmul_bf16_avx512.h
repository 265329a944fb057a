// The AVX-512 matrix-vector kernel for BF16 weights (decode). A BF16 value is the top half of a
// float, so 32 weights loaded as 16 32-bit lanes widen in two instructions: lane << 16 gives the
// even-indexed weights, lane & 0xffff0000 the odd-indexed ones. The activation row is split once
// per call into its even- and odd-indexed halves (arrange_even_odd) to match; sums are exact
// float32 products accumulated in float32, like the portable kernel, in another order.
#pragma once

#include <cstdint>
#include <vector>

namespace mistral::cpu {

// Per chunk of 32 values (the last chunk zero-padded): 16 even-indexed, then 16 odd-indexed.
// out gets 32 * ceil(k / 32) floats.
void arrange_even_odd(const float* x, int64_t k, std::vector<float>* out);

// out[r] = dot(x, w[r]) for 4 BF16 rows of length k; x arranged by arrange_even_odd.
// Needs cpu_features().avx512().
void bf16_dot_1x4_avx512(const float* x_arranged, const uint16_t* const* w, int64_t k, float* out);

}  // namespace mistral::cpu
