#include "apps/cli/sampling_options.h"

namespace mistral::cli {

void add_sampling_options(CLI::App& cmd, SamplingParams& params) {
  cmd.add_flag("--greedy", params.greedy, "greedy decoding (argmax)");
  cmd.add_option("--temperature", params.temperature, "sampling temperature");
  cmd.add_option("--top-k", params.top_k, "keep the k most likely tokens (0 = off)");
  cmd.add_option("--top-p", params.top_p, "nucleus sampling threshold in (0, 1]");
  cmd.add_option("--min-p", params.min_p, "min-p threshold in [0, 1] (0 = off)");
  cmd.add_option("--repetition-penalty", params.repetition_penalty,
                 "penalty > 1 discourages repeats (1 = off)");
  cmd.add_option("--seed", params.seed, "random seed; the same seed gives the same tokens");
}

}  // namespace mistral::cli
