// Model: a Mistral decoder (config + weights) run through a Backend. forward() takes a batch of
// token ids with its attention mask, continues from a KvCache, and returns logits (every position
// or only the last) and, on request, the hidden states of every layer in Hugging Face's
// convention: [0] the embeddings, [l] the output of layer l-1 for l < L, [L] the last layer's
// output after the final norm. Position ids come from the mask as Hugging Face's generate() makes
// them (count of real tokens before each one). The model is immutable after construction; forward
// is not reentrant (one call at a time per Model: the backend and the activation workspace are
// shared). Activations and the KV cache live in the backend's memory; only the ids, the mask and
// the outputs cross to and from the host.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "core/status.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace mistral {

struct ForwardOptions {
  bool all_logits = true;  // false: logits of the last position of each row only
  bool output_hidden_states = false;
  // A sampler of this model's backend (Model::new_sampler) for the call's batch: the backend
  // picks one token per row from the last position's logits (all_logits must be false) and
  // only the ids come back (ForwardOutput::token_ids; logits stay empty).
  const SamplerState* sampler = nullptr;
};

struct ForwardOutput {
  int64_t batch = 0;
  int64_t tokens = 0;              // T of this call
  int64_t logit_positions = 0;     // T, or 1 when only the last position was asked for
  std::vector<float> logits;       // [B, logit_positions, vocab] (empty with a sampler)
  std::vector<int32_t> token_ids;  // [B] with a sampler: each row's next token
  std::vector<std::vector<float>> hidden_states;  // L+1 entries of [B, T, hidden]
};

class Model {
 public:
  Model(ModelConfig config, ModelWeights weights, std::unique_ptr<Backend> backend);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  ModelWeights& mutable_weights() { return weights_; }
  Backend& backend() { return *backend_; }

  // Runs prefills of 16, 128 and 512 tokens (both matmul paths) and a decode step on a scratch
  // cache, so that a backend that loads code or sets up libraries on first use does so here and
  // not in the first request. load_model calls it when the backend wants_warm_up().
  Status warm_up();

  // A KV cache in this model's backend memory for `batch` sequences of up to
  // max_sequence_length tokens, stored as `dtype` (default: the backend's, F32 on the CPU), its
  // memory cut into blocks as `layout` says.
  Result<KvCache> new_cache(int64_t batch, int64_t max_sequence_length,
                            std::optional<DType> dtype = std::nullopt,
                            const KvCacheLayout& layout = {});

  // Sampling on the backend (ForwardOptions::sampler) for one row per entry of `rows`; an error
  // when the backend does not sample (Backend::supports_sampling).
  Result<SamplerState> new_sampler(const std::vector<SamplingRow>& rows) {
    return backend_->new_sampler(rows);
  }

  // input_ids and attention_mask are [B, T] row-major (mask 1 = real token, 0 = padding). The
  // cache must have been created for batch B; it is advanced by T. Errors (ids out of range, a
  // mask value other than 0/1, a full cache, started steps not finished) leave the cache
  // untouched.
  Result<ForwardOutput> forward(std::span<const int32_t> input_ids,
                                std::span<const uint8_t> attention_mask, int64_t batch,
                                KvCache& cache, const ForwardOptions& options = {});

  // Decode steps queued ahead of the host. start_step queues a step of one real token per row
  // whose ids are the tokens the last call on this cache sampled (forward with
  // options.sampler, or start_step), without bringing them to the host first, and returns
  // without waiting; finish_step waits for the oldest started step and returns its tokens [B].
  // So the host can queue step t+1 before it has read token t, and the device does not wait for
  // the host between steps. A started step advances the cache at once; cancel_steps takes every
  // started, unfinished step back from the cache (KvCache::retract), e.g. once the host sees a
  // stop token in the step before them. options as for forward (a sampler, all_logits = false,
  // no hidden states). forward is refused while started steps are unfinished.
  Status start_step(KvCache& cache, const ForwardOptions& options);
  Result<std::vector<int32_t>> finish_step();
  Status cancel_steps(KvCache& cache);
  // Started steps whose tokens finish_step has not returned.
  int64_t started_steps() const { return static_cast<int64_t>(started_.size()); }

 private:
  // Activation buffers of one forward call, carved from one backend allocation kept between
  // calls and grown when a call needs more.
  struct Activations;
  Result<Activations> activations(int64_t rows, int64_t batch);
  std::vector<float> download(const void* src, int64_t n);
  // forward and start_step up to their downloads: the checks, the inputs uploaded (with
  // ids_sampled, the ids are replaced on the backend by the tokens in sampled_), the ops run or
  // replayed, the cache advanced, and with a sampler each row's token drawn into sampled_.
  Result<Activations> enqueue(std::span<const int32_t> input_ids, bool ids_sampled,
                              std::span<const uint8_t> attention_mask, int64_t batch,
                              KvCache& cache, const ForwardOptions& options, ForwardOutput& out);
  // The ops of one forward call, from the embedding lookup to the head's logits (in
  // a.logits); the inputs are in backend memory already.
  void run_ops(const Activations& a, KvCache& cache, int64_t batch, int64_t tokens,
               const ForwardOptions& options, ForwardOutput& out);

  ModelConfig config_;
  ModelWeights weights_;
  std::unique_ptr<Backend> backend_;
  Buffer workspace_;
  // Replay of recorded ops (Backend::begin_capture) for calls of the same shape on the same
  // cache and workspace, i.e. decode steps: the first such call runs eagerly, the second is
  // recorded, later ones replay. The key holds everything whose change invalidates a recording.
  std::vector<uint64_t> last_key_;
  std::vector<uint64_t> recording_key_;
  std::shared_ptr<void> recording_;
  // The tokens the last sampling call drew ([B] int32, backend memory), and the id of the cache
  // it ran on (0: none, or taken back).
  Buffer sampled_;
  uint64_t sampled_cache_ = 0;
  // Started steps, oldest first: the download of each one's tokens; the cache and batch they ran
  // on.
  std::deque<std::unique_ptr<Download>> started_;
  uint64_t started_cache_ = 0;
  int64_t started_batch_ = 0;
};

// Moves every weight to where `backend` computes (Backend::place_weight); a tied lm_head is
// placed as a matrix from the embedding's values. Host backends keep most weights as they are.
// `replaced`, if set, is called with each weight as the loader made it once its placed form has
// stopped reading that memory (so that the caller can release mapped pages), one at a time as
// they are placed, never for memory that another weight still reads. Errors name the tensor.
Status place_weights(const ModelConfig& config, ModelWeights& weights, Backend& backend,
                     const std::function<void(const Tensor&)>& replaced = nullptr);

}  // namespace mistral
