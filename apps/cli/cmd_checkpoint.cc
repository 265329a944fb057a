// `mistral random-checkpoint --preset 7b --out DIR [--layers N] [--dtype bf16] [--seed S]` writes
// a random-weight checkpoint in Hugging Face layout; `mistral save --model DIR --out DIR2
// [--dtype ...]` writes a loaded model back (atomically, sharded past --max-shard-mb);
// `mistral quantize --model DIR --out DIR2 --weights int8|int4` writes it with its weight
// matrices quantized (core/quant.h), a checkpoint every command loads as it is.
#include <memory>
#include <string>

#include "apps/cli/batch_input.h"
#include "apps/cli/commands.h"
#include "core/thread_pool.h"
#include "model/checkpoint_writer.h"

namespace mistral::cli {
namespace {

struct RandomArgs {
  std::string preset = "7b";
  std::string config_path;
  std::string out;
  int64_t layers = 0;
  std::string dtype = "bf16";
  uint64_t seed = 0;
  float stddev = 0.02f;
  uint64_t max_shard_mb = kDefaultMaxShardBytes >> 20;
  int threads = 0;
};

DType dtype_or_fail(const std::string& name, const char* option) {
  auto d = parse_float_dtype(name);
  if (!d) fail(error(std::string(option) + ": \"" + name + "\" is not one of f32, bf16, f16"));
  return *d;
}

void run_random(const RandomArgs& args) {
  ThreadPool::set_default_threads(args.threads);
  ModelConfig config = args.config_path.empty() ? value_or_fail(preset_config(args.preset))
                                                : value_or_fail(load_config_file(args.config_path));
  if (args.layers > 0) config.num_hidden_layers = args.layers;
  ok_or_fail(write_random_checkpoint(config, args.out, dtype_or_fail(args.dtype, "--dtype"),
                                     args.seed, args.stddev, args.max_shard_mb << 20));
}

struct SaveArgs {
  ModelOptions model;
  std::string out;
  std::string save_dtype;
  uint64_t max_shard_mb = kDefaultMaxShardBytes >> 20;
};

void run_save(const SaveArgs& args) {
  std::unique_ptr<Model> model = value_or_fail(load_model_from_options(args.model));
  SaveOptions options;
  if (!args.save_dtype.empty()) options.dtype = dtype_or_fail(args.save_dtype, "--dtype");
  options.max_shard_bytes = args.max_shard_mb << 20;
  ok_or_fail(save_checkpoint(model->config(), model->mutable_weights(), args.out, options));
}

struct QuantizeArgs {
  ModelOptions model;
  std::string out;
  uint64_t max_shard_mb = kDefaultMaxShardBytes >> 20;
};

void run_quantize(const QuantizeArgs& args) {
  std::unique_ptr<Model> model = value_or_fail(load_model_from_options(args.model));
  SaveOptions options;
  options.max_shard_bytes = args.max_shard_mb << 20;
  ok_or_fail(save_checkpoint(model->config(), model->mutable_weights(), args.out, options));
}

}  // namespace

void add_quantize_command(CLI::App& app) {
  auto args = std::make_shared<QuantizeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "quantize",
      "write a checkpoint with int8 or int4 weight matrices (groups of 32, F16 scales)");
  cmd->add_option("--model", args->model.model_dir, "dense checkpoint directory")->required();
  cmd->add_option("--out", args->out, "output directory")->required();
  cmd->add_option("--weights", args->model.weights, "int8 or int4")->required();
  cmd->add_option("--max-shard-mb", args->max_shard_mb, "shard past this size")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--threads", args->model.threads, "worker threads");
  cmd->callback([args] { run_quantize(*args); });
}

void add_random_checkpoint_command(CLI::App& app) {
  auto args = std::make_shared<RandomArgs>();
  CLI::App* cmd = app.add_subcommand("random-checkpoint",
                                     "write a random-weight checkpoint (Hugging Face layout)");
  cmd->add_option("--preset", args->preset, "shape: 7b (Mistral-7B-v0.1) or tiny");
  cmd->add_option("--config", args->config_path, "take the shape from this config.json instead");
  cmd->add_option("--out", args->out, "output directory")->required();
  cmd->add_option("--layers", args->layers, "override num_hidden_layers")
      ->check(CLI::Range(0, 4096));
  cmd->add_option("--dtype", args->dtype, "f32, bf16 or f16");
  cmd->add_option("--seed", args->seed, "random seed");
  cmd->add_option("--std", args->stddev, "standard deviation of the weights")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-shard-mb", args->max_shard_mb, "shard past this size")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--threads", args->threads, "worker threads (default: all cores)");
  cmd->callback([args] { run_random(*args); });
}

void add_save_command(CLI::App& app) {
  auto args = std::make_shared<SaveArgs>();
  CLI::App* cmd =
      app.add_subcommand("save", "load a checkpoint and write it in Hugging Face layout");
  cmd->add_option("--model", args->model.model_dir, "checkpoint directory")->required();
  cmd->add_option("--out", args->out, "output directory (may be the input one)")->required();
  cmd->add_option("--dtype", args->save_dtype, "write weights as f32, bf16 or f16");
  cmd->add_option("--max-shard-mb", args->max_shard_mb, "shard past this size")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--threads", args->model.threads, "worker threads");
  cmd->callback([args] { run_save(*args); });
}

}  // namespace mistral::cli
