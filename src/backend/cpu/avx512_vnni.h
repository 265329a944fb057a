// What the AVX-512 VNNI kernel files share: the intrinsics, and MISTRAL_AVX512_VNNI, the target
// attribute of their functions (called only where cpu_features().avx512_vnni() holds). Included
// by .cc files alone, first.
#pragma once

// GCC 12's intrinsic headers trip its own uninitialized-variable warnings (_mm512_undefined_*).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#define MISTRAL_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c")))
