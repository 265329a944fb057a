// `mistral chat --model DIR [--system TEXT] [--kv-cache f32|bf16|f16|int8]`: an interactive
// multi-turn conversation in the checkpoint's own chat format. Each line read from stdin is a user
// turn; the answer streams to stdout until EOS. "/reset" starts over, "/exit" (or end of input)
// quits. Each turn re-encodes the whole conversation with mistral-common's rules, so the prompt is
// always exactly what Mistral's tooling would send.
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "apps/cli/commands.h"
#include "apps/cli/sampling_options.h"
#include "apps/cli/text_generation.h"
#include "tokenizer/chat_encoder.h"

namespace mistral::cli {
namespace {

struct ChatArgs {
  ModelOptions model;
  std::string tokenizer;
  std::string system;
  int64_t max_new_tokens = 512;
  SamplingParams sampling;
  std::string kv_cache;
  int64_t kv_block_size = 0;
};

void run_chat(ChatArgs& args) {
  const std::optional<DType> kv_cache_dtype =
      value_or_fail(kv_cache_dtype_from_option(args.kv_cache));
  TextModel tm = value_or_fail(load_text_model(args.model, args.tokenizer));
  ChatEncoder encoder = value_or_fail(ChatEncoder::create(*tm.tokenizer));
  nlohmann::json messages = nlohmann::json::array();
  auto reset = [&] {
    messages = nlohmann::json::array();
    if (!args.system.empty()) messages.push_back({{"role", "system"}, {"content", args.system}});
  };
  reset();
  GenerationConfig gen;
  gen.max_new_tokens = args.max_new_tokens;
  gen.sampling = args.sampling;
  gen.kv_cache_dtype = kv_cache_dtype;
  gen.kv_block_size = args.kv_block_size;
  gen.stop_at_eos = true;
  gen.stop_token_ids = {tm.tokenizer->eos_id()};
  std::string line;
  for (;;) {
    std::fputs("> ", stdout);
    std::fflush(stdout);
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line == "/reset") {
      reset();
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({{"role", "user"}, {"content", line}});
    Result<std::vector<int32_t>> prompt =
        encoder.encode_json(nlohmann::json{{"messages", messages}}.dump());
    if (!prompt.ok()) {
      std::fprintf(stderr, "error: %s\n", prompt.status().message().c_str());
      messages.erase(messages.end() - 1);
      continue;
    }
    // Keep the answer within the context: the prompt grows with every turn.
    GenerationConfig turn = gen;
    const int64_t room =
        tm.model->config().max_position_embeddings - static_cast<int64_t>(prompt->size());
    if (room <= 0) {
      std::fprintf(stderr, "error: the conversation fills the context; /reset to start over\n");
      messages.erase(messages.end() - 1);
      continue;
    }
    turn.max_new_tokens = std::min(turn.max_new_tokens, room);
    Result<TextResult> answer = generate_text(tm, *prompt, turn, /*stream=*/true);
    std::fputs("\n", stdout);
    if (!answer.ok()) {
      std::fprintf(stderr, "error: %s\n", answer.status().message().c_str());
      messages.erase(messages.end() - 1);
      continue;
    }
    messages.push_back({{"role", "assistant"}, {"content", answer->text}});
  }
}

}  // namespace

void add_chat_command(CLI::App& app) {
  auto args = std::make_shared<ChatArgs>();
  CLI::App* cmd = app.add_subcommand("chat", "interactive multi-turn chat in the model's format");
  add_model_options(*cmd, args->model);
  add_kv_cache_option(*cmd, args->kv_cache, args->kv_block_size);
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer file or directory (default: --model)");
  cmd->add_option("--system", args->system, "system prompt");
  cmd->add_option("--max-new-tokens", args->max_new_tokens, "longest answer per turn")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  add_sampling_options(*cmd, args->sampling);
  cmd->callback([args] { run_chat(*args); });
}

}  // namespace mistral::cli
