#include "backend/cpu/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace mistral::cpu {
namespace {

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
  f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#endif
  const char* env = std::getenv("MISTRAL_CPU_KERNELS");
  if (env != nullptr && std::strcmp(env, "portable") == 0) f = CpuFeatures{};
  return f;
}

std::atomic<bool> portable_only{false};

}  // namespace

CpuFeatures cpu_features() {
  static const CpuFeatures detected = detect();
  return portable_only.load(std::memory_order_relaxed) ? CpuFeatures{} : detected;
}

void set_portable_kernels_only(bool portable) { portable_only = portable; }

const char* cpu_kernel_level() {
  const CpuFeatures f = cpu_features();
  if (f.avx512_vnni() && f.avx512_bf16()) return "avx512-vnni-bf16";
  if (f.avx512_vnni()) return "avx512-vnni";
  if (f.avx512_bf16()) return "avx512-bf16";
  if (f.avx512()) return "avx512";
  return "portable";
}

}  // namespace mistral::cpu
