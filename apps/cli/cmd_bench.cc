// `mistral bench --model DIR --prompt-tokens P --new-tokens N --threads T [--kv-cache TYPE]`:
// prefill of P random tokens then N greedy decode steps at batch 1; prints JSON with
// prefill_tok_s, decode_tok_s, the weight bytes read per decoded token, the achieved bandwidth,
// the KV cache's type and size, and peak resident memory.
#include <sys/resource.h>

#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "apps/cli/batch_input.h"
#include "apps/cli/commands.h"
#include "core/quant.h"
#include "core/thread_pool.h"
#include "engine/generator.h"

namespace mistral::cli {
namespace {

struct BenchArgs {
  ModelOptions model;
  int64_t prompt_tokens = 64;
  int64_t new_tokens = 32;
  uint64_t seed = 0;
  std::string kv_cache;
};

uint64_t weight_bytes(Model& model) {
  uint64_t bytes = 0;
  model.mutable_weights().for_each_tensor(
      model.config(), [&](TensorRole, int64_t, Tensor& t) { bytes += t.num_bytes(); });
  return bytes;
}

void run_bench(const BenchArgs& args) {
  const DType kv_cache_dtype = value_or_fail(kv_cache_dtype_from_option(args.kv_cache));
  std::unique_ptr<Model> model = value_or_fail(load_model_from_options(args.model));
  const ModelConfig& c = model->config();
  std::vector<int32_t> prompt(args.prompt_tokens);
  uint64_t state = args.seed * 0x9e3779b97f4a7c15ull + 1;
  for (auto& id : prompt) {  // random ids away from the special tokens
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    id = static_cast<int32_t>(3 + (state >> 33) % static_cast<uint64_t>(c.vocab_size - 3));
  }
  GenerationConfig gen;
  gen.max_new_tokens = args.new_tokens + 1;  // the first token comes from the prefill
  gen.sampling.greedy = true;
  gen.kv_cache_dtype = kv_cache_dtype;
  GenerationResult r = value_or_fail(generate(*model, {prompt}, gen));

  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  const double decode_tok_s = r.decode_steps / std::max(r.decode_seconds, 1e-9);
  const uint64_t bytes = weight_bytes(*model);
  nlohmann::json out;
  out["backend"] = model->backend().name();
  out["weights"] = c.quantization != QuantType::kNone
                       ? std::string(quant_type_name(c.quantization))
                       : std::string(dtype_name(model->weights().layers.at(0).wq.dtype));
  out["threads"] = ThreadPool::global().num_threads();
  out["prompt_tokens"] = args.prompt_tokens;
  out["new_tokens"] = r.decode_steps;
  out["prefill_tok_s"] = args.prompt_tokens / std::max(r.prefill_seconds, 1e-9);
  out["decode_tok_s"] = decode_tok_s;
  out["time_to_first_token_s"] = r.prefill_seconds;
  out["weight_bytes"] = bytes;
  out["kv_cache"] = kv_cache_dtype_name(kv_cache_dtype);
  out["kv_cache_bytes"] = r.kv_cache_bytes;
  out["decode_bandwidth_gb_s"] = decode_tok_s * static_cast<double>(bytes) / 1e9;
  out["peak_rss_mb"] = usage.ru_maxrss / 1024.0;
  std::printf("%s\n", out.dump(2).c_str());
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand("bench", "measure prefill and decode speed at batch 1");
  add_model_options(*cmd, args->model);
  add_kv_cache_option(*cmd, args->kv_cache);
  cmd->add_option("--prompt-tokens", args->prompt_tokens, "prompt length")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--new-tokens", args->new_tokens, "decode steps")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--seed", args->seed, "seed of the random prompt");
  cmd->callback([args] { run_bench(*args); });
}

}  // namespace mistral::cli
