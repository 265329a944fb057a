// The sampling options every generating command takes (--greedy, --temperature, --top-k, --top-p,
// --min-p, --repetition-penalty, --seed), bound to a SamplingParams.
#pragma once

#include <CLI/CLI.hpp>

#include "sampling/sampling_params.h"

namespace mistral::cli {

// `params.greedy` is set by --greedy; validation happens with the request (sampling/validate).
void add_sampling_options(CLI::App& cmd, SamplingParams& params);

}  // namespace mistral::cli
