// `mistral generate --model DIR --input IN.json --max-new-tokens N [--greedy] [--json]
// [--kv-cache f32|bf16|f16|int8] [--kv-block-size N]`: generates for every row of a padded batch
// (each row's real tokens are its prompt). With
// --prompt TEXT or --chat REQUEST.json instead of --input it encodes with the checkpoint's
// tokenizer (and chat format), stops at EOS, and prints the text as it is generated. Without
// --greedy it samples with --temperature/--top-k/--top-p/--min-p/--repetition-penalty/--seed.
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "apps/cli/batch_input.h"
#include "apps/cli/commands.h"
#include "apps/cli/sampling_options.h"
#include "apps/cli/text_generation.h"
#include "core/file_util.h"
#include "engine/generator.h"
#include "tokenizer/chat_encoder.h"

namespace mistral::cli {
namespace {

struct GenerateArgs {
  ModelOptions model;
  std::string input;
  std::string prompt;
  std::string chat_file;
  std::string tokenizer;
  bool ignore_eos = false;
  int64_t max_new_tokens = 32;
  bool json = false;
  bool stop_at_eos = false;
  std::vector<int32_t> stop_ids;
  SamplingParams sampling;
  std::string kv_cache;
  int64_t kv_block_size = 0;
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

GenerationConfig generation_config(const GenerateArgs& args) {
  GenerationConfig gen;
  gen.max_new_tokens = args.max_new_tokens;
  gen.sampling = args.sampling;
  gen.stop_at_eos = args.stop_at_eos;
  gen.stop_token_ids = args.stop_ids;
  gen.kv_cache_dtype = value_or_fail(kv_cache_dtype_from_option(args.kv_cache));
  gen.kv_block_size = args.kv_block_size;
  return gen;
}

void run_text_generate(GenerateArgs& args) {
  GenerationConfig gen = generation_config(args);
  TextModel tm = value_or_fail(load_text_model(args.model, args.tokenizer));
  std::vector<int32_t> prompt;
  if (!args.chat_file.empty()) {
    ChatEncoder encoder = value_or_fail(ChatEncoder::create(*tm.tokenizer));
    Result<std::vector<int32_t>> ids =
        encoder.encode_json(value_or_fail(read_file(args.chat_file, kMaxJsonFileBytes)));
    if (!ids.ok()) fail(ids.status().with_context(args.chat_file));
    prompt = std::move(ids).value();
  } else {
    prompt = tm.tokenizer->encode(args.prompt, /*add_bos=*/true, /*add_eos=*/false);
  }
  if (!args.ignore_eos) {  // text generation ends at the end of the answer
    gen.stop_at_eos = true;
    gen.stop_token_ids.push_back(tm.tokenizer->eos_id());
  }
  TextResult r = value_or_fail(generate_text(tm, prompt, gen, /*stream=*/!args.json));
  if (args.json) {
    nlohmann::json out;
    out["text"] = r.text;
    out["prompt_tokens"] = prompt.size();
    out["new_tokens"] = {r.tokens};
    out["finish_reason"] = finish_reason_name(r.finish_reason);
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("\n");
  }
}

void run_generate(GenerateArgs& args) {
  const int sources = !args.input.empty() + !args.prompt.empty() + !args.chat_file.empty();
  if (sources != 1) fail(error("give exactly one of --input, --prompt, --chat"));
  if (args.input.empty()) return run_text_generate(args);
  GenerationConfig gen = generation_config(args);
  BatchInput input = value_or_fail(read_batch_input(args.input));
  std::unique_ptr<Model> model = value_or_fail(load_model_from_options(args.model));
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t b = 0; b < input.batch; ++b) prompts.push_back(input.row_tokens(b));

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
  add_kv_cache_option(*cmd, args->kv_cache, args->kv_block_size);
  cmd->add_option("--input", args->input, "JSON with input_ids (and attention_mask)");
  cmd->add_option("--prompt", args->prompt, "text prompt, encoded with the model's tokenizer");
  cmd->add_option("--chat", args->chat_file,
                  "chat request JSON {\"messages\": [...], \"tools\": [...]}, Mistral's format");
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer file or directory (default: --model)");
  cmd->add_flag("--ignore-eos", args->ignore_eos, "with --prompt/--chat: do not stop at EOS");
  cmd->add_option("--max-new-tokens", args->max_new_tokens, "tokens to generate per row");
  cmd->add_flag("--json", args->json, "print one JSON object with new_tokens per row");
  cmd->add_flag("--stop-at-eos", args->stop_at_eos, "stop a row at the model's eos_token_id");
  cmd->add_option("--stop-token", args->stop_ids, "extra stop token ids");
  add_sampling_options(*cmd, args->sampling);
  cmd->callback([args] { run_generate(*args); });
}

}  // namespace mistral::cli
