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
