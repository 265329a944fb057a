#include "sampling/sampling_params.h"

#include <cmath>
#include <sstream>
#include <string>

namespace mistral {
namespace {

std::string show(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

Status bad(const char* name, double value, const std::string& rule) {
  return error(std::string("sampling parameter ") + name + " = " + show(value) + ": " + rule);
}

}  // namespace

Status validate(const SamplingParams& p) {
  const float t = p.temperature;
  if (std::isnan(t) || std::isinf(t) || t < 0.0f || t > kMaxTemperature) {
    return bad(
        "temperature", t,
        "must be a finite number in (0, " + show(kMaxTemperature) + "] (0 only with greedy)");
  }
  if (t == 0.0f && !p.greedy) {
    return bad("temperature", t, "0 is not a sampling temperature; use greedy decoding instead");
  }
  if (p.top_k < 0) return bad("top_k", p.top_k, "must be >= 0 (0 turns top-k off)");
  if (std::isnan(p.top_p) || p.top_p <= 0.0f || p.top_p > 1.0f) {
    return bad("top_p", p.top_p, "must be in (0, 1] (1 turns top-p off)");
  }
  if (std::isnan(p.min_p) || p.min_p < 0.0f || p.min_p > 1.0f) {
    return bad("min_p", p.min_p, "must be in [0, 1] (0 turns min-p off)");
  }
  const float r = p.repetition_penalty;
  if (std::isnan(r) || std::isinf(r) || r <= 0.0f) {
    return bad("repetition_penalty", r, "must be a finite number > 0 (1 turns it off)");
  }
  return Status::ok_status();
}

}  // namespace mistral
