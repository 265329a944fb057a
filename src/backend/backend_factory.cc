// make_backend: the device string of --device / EngineOptions to a Backend.
#include <cctype>

#include "backend/backend.h"
#ifdef MISTRAL_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace mistral {

Result<std::unique_ptr<Backend>> make_backend(const std::string& device) {
  if (device.empty() || device == "cpu") return make_cpu_backend();
  if (device.rfind("cuda", 0) == 0) {
    int index = 0;
    if (device.size() > 4) {
      const std::string digits = device.substr(5);
      bool ok = device[4] == ':' && !digits.empty() && digits.size() <= 4;
      for (char c : digits) ok = ok && std::isdigit(static_cast<unsigned char>(c));
      if (!ok) return error("device \"" + device + "\": expected cpu, cuda or cuda:N");
      index = std::stoi(digits);
    }
#ifdef MISTRAL_HAVE_CUDA
    return cuda::make_cuda_backend(index);
#else
    (void)index;
    return error("device \"" + device +
                 "\": this build has no CUDA backend (configure with -DMISTRAL_CUDA=ON where nvcc "
                 "is installed)");
#endif
  }
  return error("device \"" + device + "\": expected cpu, cuda or cuda:N");
}

}  // namespace mistral
