#include "fixture.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/check.h"

namespace mistral::testing {
namespace {

std::vector<float> row(const nlohmann::json& values) {
  std::vector<float> out;
  for (const auto& v : values) {
    out.push_back(v.is_null() ? -std::numeric_limits<float>::infinity()
                              : static_cast<float>(v.get<double>()));
  }
  return out;
}

Fixture load() {
  std::ifstream in(MISTRAL_SAMPLING_FIXTURE);
  MISTRAL_CHECK(in) << "cannot open " << MISTRAL_SAMPLING_FIXTURE;
  const nlohmann::json doc = nlohmann::json::parse(in);
  Fixture f;
  f.transformers_version = doc.at("transformers").get<std::string>();
  for (const auto& c : doc.at("cases")) {
    FixtureCase fc;
    fc.name = c.at("name").get<std::string>();
    fc.logits = row(c.at("logits"));
    fc.seen_ids = c.at("seen_ids").get<std::vector<int32_t>>();
    const auto& p = c.at("params");
    fc.params.temperature = static_cast<float>(p.at("temperature").get<double>());
    fc.params.top_k = p.at("top_k").get<int>();
    fc.params.top_p = static_cast<float>(p.at("top_p").get<double>());
    fc.params.min_p = static_cast<float>(p.at("min_p").get<double>());
    fc.params.repetition_penalty = static_cast<float>(p.at("repetition_penalty").get<double>());
    fc.expected = row(c.at("expected"));
    fc.survivors = c.at("survivors").get<std::vector<int32_t>>();
    f.cases.push_back(std::move(fc));
  }
  for (const auto& r : doc.at("xoshiro256starstar")) {
    RngCase rc{r.at("seed").get<uint64_t>(), {}};
    for (const auto& o : r.at("outputs")) rc.outputs.push_back(std::stoull(o.get<std::string>()));
    f.rng.push_back(std::move(rc));
  }
  return f;
}

}  // namespace

const Fixture& fixture() {
  static const Fixture f = load();
  return f;
}

std::vector<double> reference_probs(const std::vector<float>& processed) {
  double max = -std::numeric_limits<double>::infinity();
  for (float x : processed) max = std::max(max, static_cast<double>(x));
  std::vector<double> p(processed.size(), 0.0);
  if (std::isinf(max)) return p;
  double sum = 0.0;
  for (size_t i = 0; i < p.size(); ++i) sum += p[i] = std::exp(processed[i] - max);
  for (double& v : p) v /= sum;
  return p;
}

}  // namespace mistral::testing
