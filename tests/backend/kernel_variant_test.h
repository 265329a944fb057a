// A test fixture parameterized on the CPU kernels it runs: false, the AVX-512 VNNI ones (the test
// is skipped on CPUs without them); true, the portable ones only (set_portable_kernels_only).
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "backend/cpu/cpu_features.h"

namespace mistral::testing {

class VnniOrPortableTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (!GetParam() && !cpu::cpu_features().avx512_vnni()) {
      GTEST_SKIP() << "this CPU has no AVX-512 VNNI; the portable kernel is tested instead";
    }
    cpu::set_portable_kernels_only(GetParam());
  }
  void TearDown() override { cpu::set_portable_kernels_only(false); }
};

// Test name suffix for INSTANTIATE_TEST_SUITE_P: "Avx512Vnni" or "Portable".
inline std::string kernel_variant_name(const ::testing::TestParamInfo<bool>& info) {
  return info.param ? "Portable" : "Avx512Vnni";
}

}  // namespace mistral::testing
