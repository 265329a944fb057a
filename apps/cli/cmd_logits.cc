// `mistral logits --model DIR --input IN.json --out OUT.safetensors [--hidden-states]`: one
// forward pass over a padded batch; writes "logits" F32 [batch, seq, vocab] and, on request,
// "hidden_states.0" .. "hidden_states.L" F32 [batch, seq, hidden].
#include <memory>
#include <string>

#include "apps/cli/batch_input.h"
#include "apps/cli/commands.h"
#include "io/safetensors_writer.h"

namespace mistral::cli {
namespace {

struct LogitsArgs {
  ModelOptions model;
  std::string input;
  std::string out;
  bool hidden_states = false;
};

void run_logits(const LogitsArgs& args) {
  BatchInput input = value_or_fail(read_batch_input(args.input));
  std::unique_ptr<Model> model = value_or_fail(load_model_from_options(args.model));
  const ModelConfig& c = model->config();
  KvCache cache = value_or_fail(model->new_cache(input.batch, input.seq));
  ForwardOptions options;
  options.output_hidden_states = args.hidden_states;
  ForwardOutput out = value_or_fail(
      model->forward(input.input_ids, input.attention_mask, input.batch, cache, options));

  std::vector<TensorToWrite> tensors;
  TensorToWrite logits;
  logits.name = "logits";
  logits.shape = {input.batch, input.seq, c.vocab_size};
  logits.data = out.logits.data();
  tensors.push_back(logits);
  for (size_t i = 0; i < out.hidden_states.size(); ++i) {
    TensorToWrite h;
    h.name = "hidden_states." + std::to_string(i);
    h.shape = {input.batch, input.seq, c.hidden_size};
    h.data = out.hidden_states[i].data();
    tensors.push_back(h);
  }
  ok_or_fail(write_safetensors(args.out, tensors));
}

}  // namespace

void add_logits_command(CLI::App& app) {
  auto args = std::make_shared<LogitsArgs>();
  CLI::App* cmd =
      app.add_subcommand("logits", "forward pass: logits (and hidden states) of every position");
  add_model_options(*cmd, args->model);
  cmd->add_option("--input", args->input, "JSON with input_ids and attention_mask")->required();
  cmd->add_option("--out", args->out, "output .safetensors file")->required();
  cmd->add_flag("--hidden-states", args->hidden_states, "also write every layer's hidden states");
  cmd->callback([args] { run_logits(*args); });
}

}  // namespace mistral::cli
