// bfloat16 and IEEE float16 storage types with exact conversions to float and
// round-to-nearest-even conversions from float (what PyTorch's .to(bfloat16/float16) does).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace mistral {

struct BF16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};

inline float bf16_to_float(BF16 v) { return std::bit_cast<float>(uint32_t{v.bits} << 16); }

inline BF16 float_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return BF16{static_cast<uint16_t>((u >> 16) | 0x40u)};  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return BF16{static_cast<uint16_t>(u >> 16)};
}

inline float f16_to_float(F16 v) {
  const uint32_t sign = uint32_t{v.bits & 0x8000u} << 16;
  uint32_t exp = (v.bits >> 10) & 0x1fu;
  uint32_t mant = v.bits & 0x3ffu;
  uint32_t out;
  if (exp == 0) {
    if (mant == 0) {
      out = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      out = sign | ((127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    out = sign | 0x7f800000u | (mant << 13);
  } else {
    out = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(out);
}

// The same bits as f16_to_float, computed without branches (masks, and the float subtraction
// done for every value) so that a loop over a row of f16 values vectorizes.
inline float f16_bits_to_float(uint16_t h) {
  const uint32_t exp_mant = uint32_t{h & 0x7fffu} << 13;
  const uint32_t exp = exp_mant & 0x0f800000u;      // the f16 exponent field, in float position
  const uint32_t normal = exp_mant + (112u << 23);  // rebias 15 -> 127
  const uint32_t inf_nan = normal + (112u << 23);   // exponent 31 -> 255, mantissa kept
  // A subnormal m * 2^-24 is 2^-14 * (1 + m / 1024) - 2^-14, both exact in float.
  const uint32_t subnormal = std::bit_cast<uint32_t>(std::bit_cast<float>(normal + (1u << 23)) -
                                                     std::bit_cast<float>(113u << 23));
  const uint32_t is_subnormal = 0u - uint32_t{exp == 0};  // all ones or zero
  const uint32_t is_inf_nan = 0u - uint32_t{exp == 0x0f800000u};
  const uint32_t magnitude =
      (normal & ~(is_subnormal | is_inf_nan)) | (subnormal & is_subnormal) | (inf_nan & is_inf_nan);
  return std::bit_cast<float>(magnitude | (uint32_t{h & 0x8000u} << 16));
}

inline F16 float_to_f16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return F16{static_cast<uint16_t>(sign | 0x7e00u)};   // NaN
  if (u >= 0x477ff000u) return F16{static_cast<uint16_t>(sign | 0x7c00u)};  // overflow -> inf
  if (u < 0x38800000u) {                    // subnormal or zero in f16
    if (u < 0x33000000u) return F16{sign};  // rounds to zero
    const uint32_t exp = u >> 23;
    const uint32_t mant = (u & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exp;  // f16 subnormal unit is 2^-24
    uint32_t half_mant = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half_mant & 1u))) ++half_mant;
    return F16{static_cast<uint16_t>(sign | half_mant)};
  }
  // normal: rebias exponent and round mantissa to 10 bits, nearest-even
  uint32_t v = u - (112u << 23);
  v += 0xfffu + ((v >> 13) & 1u);
  return F16{static_cast<uint16_t>(sign | (v >> 13))};
}

}  // namespace mistral
