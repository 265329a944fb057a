// Which hand-written SIMD kernels this CPU can run, detected once at run time. The portable
// kernels (plain C++ compiled for several instruction sets with target_clones) run anywhere; the
// hand-written AVX-512 ones are used only when the CPU reports every extension they need.
// MISTRAL_CPU_KERNELS=portable in the environment, or set_portable_kernels_only(true) in tests,
// turns the hand-written kernels off so both paths can be checked on one machine.
#pragma once

namespace mistral::cpu {

struct CpuFeatures {
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512vnni = false;
  bool avx512bf16 = false;

  // AVX-512 F/BW/VL: what every hand-written matmul kernel needs.
  bool avx512() const { return avx512f && avx512bw && avx512vl; }
  // Plus VNNI: the int8/int4 weight kernels.
  bool avx512_vnni() const { return avx512() && avx512vnni; }
  // Plus BF16 (vdpbf16ps): the BF16 weight kernel.
  bool avx512_bf16() const { return avx512() && avx512bf16; }
};

// The features the kernels may use now (detected, minus what the switches above turn off).
CpuFeatures cpu_features();
// For tests: true limits the kernels to the portable ones until called again with false.
void set_portable_kernels_only(bool portable);
// "avx512-vnni-bf16", "avx512-vnni", "avx512-bf16", "avx512" or "portable": what cpu_features()
// selects, for logs and benchmarks.
const char* cpu_kernel_level();

}  // namespace mistral::cpu
