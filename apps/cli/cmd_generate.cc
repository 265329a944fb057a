// `mistral generate --model DIR --input IN.json --max-new-tokens N [--greedy] [--json]`:
// generates for every row of a padded batch (each row's real tokens are its prompt). Without
// --greedy it samples with --temperature/--top-k/--top-p/--min-p/--repetition-penalty/--seed.
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "apps/cli/batch_input.h"
#include "apps/cli/commands.h"
#include "engine/generator.h"

namespace mistral::cli {
namespace {

struct GenerateArgs {
  ModelOptions model;
  std::string input;
  int64_t max_new_tokens = 32;
  bool greedy = false;
  bool json = false;
  bool stop_at_eos = false;
  std::vector<int32_t> stop_ids;
  SamplingParams sampling;
};

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStopToken:
      return "stop";
    case FinishReason::kCallback:
      return "callback";
  }
  return "?";
}

void run_generate(GenerateArgs& args) {
  BatchInput input = value_or_fail(read_batch_input(args.input));
  std::unique_ptr<Model> model = value_or_fail(load_model_from_options(args.model));
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t b = 0; b < input.batch; ++b) prompts.push_back(input.row_tokens(b));

  GenerationConfig gen;
  gen.max_new_tokens = args.max_new_tokens;
  gen.sampling = args.sampling;
  gen.sampling.greedy = args.greedy;
  gen.stop_at_eos = args.stop_at_eos;
  gen.stop_token_ids = args.stop_ids;
  if (!args.json) {
    gen.on_token = [](int64_t row, int32_t token) {
      std::printf("%lld: %d\n", static_cast<long long>(row), token);
      std::fflush(stdout);
      return true;
    };
  }
  GenerationResult result = value_or_fail(generate(*model, prompts, gen));
  if (args.json) {
    nlohmann::json out;
    out["new_tokens"] = result.new_tokens;
    std::vector<std::string> reasons;
    for (FinishReason r : result.finish_reasons) reasons.push_back(finish_reason_name(r));
    out["finish_reasons"] = reasons;
    out["prefill_seconds"] = result.prefill_seconds;
    out["decode_seconds"] = result.decode_seconds;
    std::printf("%s\n", out.dump().c_str());
  }
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "generate tokens for a batch of prompts");
  add_model_options(*cmd, args->model);
  cmd->add_option("--input", args->input, "JSON with input_ids (and attention_mask)")->required();
  cmd->add_option("--max-new-tokens", args->max_new_tokens, "tokens to generate per row");
  cmd->add_flag("--greedy", args->greedy, "greedy decoding (argmax)");
  cmd->add_flag("--json", args->json, "print one JSON object with new_tokens per row");
  cmd->add_flag("--stop-at-eos", args->stop_at_eos, "stop a row at the model's eos_token_id");
  cmd->add_option("--stop-token", args->stop_ids, "extra stop token ids");
  cmd->add_option("--temperature", args->sampling.temperature, "sampling temperature");
  cmd->add_option("--top-k", args->sampling.top_k, "keep the k most likely tokens (0 = off)");
  cmd->add_option("--top-p", args->sampling.top_p, "nucleus sampling threshold in (0, 1]");
  cmd->add_option("--min-p", args->sampling.min_p, "min-p threshold in [0, 1] (0 = off)");
  cmd->add_option("--repetition-penalty", args->sampling.repetition_penalty,
                  "penalty > 1 discourages repeats (1 = off)");
  cmd->add_option("--seed", args->sampling.seed,
                  "random seed; the same seed gives the same tokens");
  cmd->callback([args] { run_generate(*args); });
}

}  // namespace mistral::cli
