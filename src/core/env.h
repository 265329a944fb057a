// The engine's environment switches (comparison and benchmark knobs such as MISTRAL_CUDA_GRAPHS=0
// or MISTRAL_GEMV_INFLIGHT=8), read one way everywhere.
#pragma once

#include <cstdlib>
#include <cstring>

namespace mistral {

// A switch that is on unless the variable is set to "0".
inline bool env_enabled(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr || std::strcmp(v, "0") != 0;
}

// The variable as an integer (std::atoi), or `fallback` when it is unset or empty.
inline int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

}  // namespace mistral
