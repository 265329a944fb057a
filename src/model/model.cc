#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <string>

namespace mistral {

Model::Model(ModelConfig config, ModelWeights weights, std::unique_ptr<Backend> backend)
    : config_(std::move(config)), weights_(std::move(weights)), backend_(std::move(backend)) {}

namespace {

Status validate_inputs(std::span<const int32_t> ids, std::span<const uint8_t> mask, int64_t batch,
                       int64_t vocab) {
  if (batch <= 0) return error("input_ids: batch must be positive");
  if (ids.empty() || ids.size() % batch != 0) {
    return error("input_ids: expected a non-empty [batch, seq] array, got " +
                 std::to_string(ids.size()) + " ids for batch " + std::to_string(batch));
  }
  if (mask.size() != ids.size()) {
    return error("attention_mask: shape does not match input_ids (" + std::to_string(mask.size()) +
                 " vs " + std::to_string(ids.size()) + " entries)");
  }
  const size_t t = ids.size() / batch;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return error("input_ids[" + std::to_string(i / t) + "][" + std::to_string(i % t) +
                   "] = " + std::to_string(ids[i]) + " is outside the vocabulary [0, " +
                   std::to_string(vocab) + ")");
    }
    if (mask[i] > 1) {
      return error("attention_mask[" + std::to_string(i / t) + "][" + std::to_string(i % t) +
                   "] must be 0 or 1");
    }
  }
  return Status();
}

}  // namespace

Status place_weights(const ModelConfig& config, ModelWeights& weights, Backend& backend,
                     const std::function<void(const Tensor&)>& replaced) {
  auto release = [&](const Tensor& before, const Tensor& after) {
    if (replaced && before.data != after.data) replaced(before);
  };
  auto name = [](TensorRole role, int64_t layer) {
    return tensor_name(role, layer, CheckpointLayout::kHuggingFace);
  };
  // Matrices multiplied by the same input are placed as one where the backend can (decode then
  // reads them in one matmul); the parts become views of the whole.
  auto place_group = [&](int64_t layer, std::vector<std::pair<TensorRole, Tensor*>> parts,
                         Tensor& whole) -> Status {
    std::vector<Tensor> hosts;
    for (auto& [role, t] : parts) hosts.push_back(*t);
    MISTRAL_ASSIGN_OR_RETURN(
        std::vector<Tensor> placed,
        backend.place_concatenated(hosts, name(parts.front().first, layer) + " (with " +
                                              std::to_string(parts.size() - 1) + " more)"));
    if (placed.empty()) return Status();  // placed one by one below
    whole = std::move(placed[0]);
    for (size_t i = 0; i < parts.size(); ++i) {
      *parts[i].second = std::move(placed[i + 1]);
      release(hosts[i], *parts[i].second);
    }
    return Status();
  };
  for (int64_t l = 0; l < static_cast<int64_t>(weights.layers.size()); ++l) {
    LayerWeights& w = weights.layers[l];
    MISTRAL_RETURN_IF_ERROR(place_group(
        l, {{TensorRole::kWq, &w.wq}, {TensorRole::kWk, &w.wk}, {TensorRole::kWv, &w.wv}}, w.wqkv));
    MISTRAL_RETURN_IF_ERROR(place_group(
        l, {{TensorRole::kWGate, &w.w_gate}, {TensorRole::kWUp, &w.w_up}}, w.w_gate_up));
  }
  Status status;
  weights.for_each_tensor(config, [&](TensorRole role, int64_t layer, Tensor& t) {
    if (!status.ok() || t.on_device) return;  // placed with its group
    const WeightUse use = is_norm_role(role)               ? WeightUse::kNorm
                          : role == TensorRole::kEmbedding ? WeightUse::kEmbedding
                                                           : WeightUse::kMatrix;
    Result<Tensor> placed = backend.place_weight(t, use, name(role, layer));
    if (!placed.ok()) {
      status = placed.status();
      return;
    }
    const Tensor before = t;
    t = std::move(placed).value();
    if (role != TensorRole::kEmbedding || !config.tie_word_embeddings) release(before, t);
  });
  MISTRAL_RETURN_IF_ERROR(status);
  if (config.tie_word_embeddings) {
    // The embedding was placed for lookups; the head multiplies by the same values.
    const Tensor host = weights.lm_head;
    MISTRAL_ASSIGN_OR_RETURN(
        weights.lm_head,
        backend.place_weight(weights.lm_head, WeightUse::kMatrix, name(TensorRole::kLmHead, -1)));
    if (weights.embedding.data != host.data) release(host, weights.lm_head);
  }
  return Status();
}

Status Model::warm_up() {
  // Prompts past the decode kernels' row limits (GEMM, flash prefill) at a few typical lengths,
  // whose matrix-product kernels a library may load only when first used, then a decode step.
  const std::vector<int64_t> steps = {16, 128, 512, 1};
  int64_t length = 0;
  for (int64_t t : steps) length += t;
  length = std::min<int64_t>(length, config_.max_position_embeddings);
  MISTRAL_ASSIGN_OR_RETURN(KvCache cache, new_cache(1, length));
  ForwardOptions last_only;
  last_only.all_logits = false;
  for (int64_t tokens : steps) {
    tokens = std::min(tokens, length - cache.length());
    if (tokens <= 0) continue;
    const std::vector<int32_t> ids(tokens, 0);
    const std::vector<uint8_t> mask(tokens, 1);
    MISTRAL_RETURN_IF_ERROR(forward(ids, mask, 1, cache, last_only).status());
  }
  return Status();
}

Result<KvCache> Model::new_cache(int64_t batch, int64_t max_sequence_length,
                                 std::optional<DType> dtype, const KvCacheLayout& layout) {
  return KvCache::create(config_, batch, max_sequence_length,
                         dtype.value_or(backend_->default_kv_cache_dtype()), *backend_, layout);
}

namespace {

// Where a call's inputs for `rows` activation rows sit in Activations::inputs, each part on a
// 16-byte boundary: positions [rows] int64, the cache's length (int64), ids [rows] int32 and the
// mask [rows] uint8. One copy per call instead of four: at batch 1 a decode step is a few
// milliseconds, and each small host-to-device copy is a few microseconds the GPU waits for.
struct StepInputs {
  size_t positions = 0, first_seq_index, ids, mask, bytes;
  explicit StepInputs(int64_t rows) {
    auto after = [](size_t offset, size_t size) { return (offset + size + 15) / 16 * 16; };
    first_seq_index = after(positions, rows * sizeof(int64_t));
    ids = after(first_seq_index, sizeof(int64_t));
    mask = after(ids, rows * sizeof(int32_t));
    bytes = mask + static_cast<size_t>(rows);
  }
};

}  // namespace

// Offsets into the workspace; every region starts on a 256-byte boundary.
struct Model::Activations {
  void *x, *h, *q, *k, *v, *attn, *gate, *up, *last;
  float* logits;
  // What a call uploads, in one region that crosses in one copy (StepInputs): the rest of the
  // fields point into it.
  void* inputs;
  StepInputs input_layout;
  int32_t* ids;
  int64_t* positions;
  uint8_t* mask;
  int64_t* first_seq_index;  // the cache's length before this call
  void* fuse;                // one row of scratch for Backend::fused_matmul
};

Result<Model::Activations> Model::activations(int64_t rows, int64_t batch) {
  const ModelConfig& c = config_;
  const size_t act = dtype_size(backend_->activation_dtype());
  const int64_t logit_rows = rows;  // all positions at most
  // q, k, v follow each other with no gap, and so do gate and up: one row's q|k|v (gate|up) is
  // what a fused matmul of that row writes.
  const size_t q_bytes = rows * c.q_dim() * act, kv_bytes = rows * c.kv_dim() * act;
  const size_t inter_bytes = rows * c.intermediate_size * act;
  // fused_matmul's scratch (one row: the single-row decode path) holds its input and product.
  const int64_t widest =
      std::max({c.q_dim() + 2 * c.kv_dim(), 2 * c.intermediate_size, c.hidden_size});
  const size_t fuse_bytes = (std::max(c.hidden_size, c.q_dim()) + widest) * act;
  const StepInputs inputs(rows);
  const size_t sizes[] = {rows * c.hidden_size * act,
                          rows * c.hidden_size * act,
                          q_bytes + 2 * kv_bytes,
                          rows * c.q_dim() * act,
                          2 * inter_bytes,
                          batch * c.hidden_size * act,
                          logit_rows * c.vocab_size * sizeof(float),
                          inputs.bytes,
                          fuse_bytes};
  size_t offsets[std::size(sizes)];
  size_t total = 0;
  for (size_t i = 0; i < std::size(sizes); ++i) {
    offsets[i] = total;
    total += (sizes[i] + 255) / 256 * 256;
  }
  if (workspace_.bytes < total) {
    workspace_ = Buffer();  // free the old block first
    MISTRAL_ASSIGN_OR_RETURN(
        workspace_,
        backend_->allocate(total, "activations of " + std::to_string(rows) + " tokens"));
  }
  auto* base = static_cast<uint8_t*>(workspace_.data);
  auto at = [&](int i, size_t offset = 0) {
    return static_cast<void*>(base + offsets[i] + offset);
  };
  return Activations{at(0),
                     at(1),
                     at(2),
                     at(2, q_bytes),
                     at(2, q_bytes + kv_bytes),
                     at(3),
                     at(4),
                     at(4, inter_bytes),
                     at(5),
                     static_cast<float*>(at(6)),
                     at(7),
                     inputs,
                     static_cast<int32_t*>(at(7, inputs.ids)),
                     static_cast<int64_t*>(at(7, inputs.positions)),
                     static_cast<uint8_t*>(at(7, inputs.mask)),
                     static_cast<int64_t*>(at(7, inputs.first_seq_index)),
                     at(8)};
}

std::vector<float> Model::download(const void* src, int64_t n) {
  std::vector<float> out(n);
  if (backend_->activation_dtype() == DType::kF32) {
    backend_->to_host(out.data(), src, n * sizeof(float));
    return out;
  }
  const DType dtype = backend_->activation_dtype();
  std::vector<uint8_t> raw(n * dtype_size(dtype));
  backend_->to_host(raw.data(), src, raw.size());
  for (int64_t i = 0; i < n; ++i) out[i] = load_float(raw.data(), dtype, i);
  return out;
}

Result<ForwardOutput> Model::forward(std::span<const int32_t> input_ids,
                                     std::span<const uint8_t> attention_mask, int64_t batch,
                                     KvCache& cache, const ForwardOptions& options) {
  if (!started_.empty()) {
    return error("forward: " + std::to_string(started_.size()) +
                 " started decode step(s) are not finished (finish_step or cancel_steps first)");
  }
  ForwardOutput out;
  MISTRAL_ASSIGN_OR_RETURN(Activations a, enqueue(input_ids, /*ids_sampled=*/false, attention_mask,
                                                  batch, cache, options, out));
  Backend& be = *backend_;
  if (options.sampler != nullptr) {
    out.token_ids.resize(batch);
    be.to_host(out.token_ids.data(), sampled_.data, batch * sizeof(int32_t));
    return out;
  }
  out.logits.resize(out.logit_positions * batch * config_.vocab_size);
  be.to_host(out.logits.data(), a.logits, out.logits.size() * sizeof(float));
  return out;
}

Status Model::start_step(KvCache& cache, const ForwardOptions& options) {
  const int64_t batch = cache.batch();
  if (options.sampler == nullptr || options.all_logits || options.output_hidden_states) {
    return error(
        "start_step: ForwardOptions needs a sampler, all_logits = false and no hidden states");
  }
  if (sampled_cache_ != cache.id()) {
    return error(
        "start_step: no tokens were sampled for this cache by the last call (forward "
        "with a sampler, or start_step)");
  }
  const std::vector<int32_t> ids(batch, 0);  // replaced on the backend by the sampled tokens
  const std::vector<uint8_t> mask(batch, 1);
  ForwardOutput out;
  MISTRAL_RETURN_IF_ERROR(
      enqueue(ids, /*ids_sampled=*/true, mask, batch, cache, options, out).status());
  started_.push_back(backend_->start_download(sampled_.data, batch * sizeof(int32_t)));
  started_batch_ = batch;
  return Status();
}

Result<std::vector<int32_t>> Model::finish_step() {
  if (started_.empty()) return error("finish_step: no decode step was started (start_step)");
  std::vector<int32_t> tokens(started_batch_);
  started_.front()->wait(tokens.data());
  started_.pop_front();
  return tokens;
}

Status Model::cancel_steps(KvCache& cache) {
  if (started_.empty()) return Status();
  if (started_cache_ != cache.id()) {
    return error("cancel_steps: the started steps ran on another cache");
  }
  if (started_steps() > cache.retractable_steps()) {
    return error("cancel_steps: " + std::to_string(started_steps()) +
                 " started steps cannot be taken back from this cache (a full rolling cache "
                 "takes back only the last one): finish_step the others first");
  }
  const std::vector<uint8_t> real(started_batch_, 1);
  while (!started_.empty()) {
    MISTRAL_RETURN_IF_ERROR(cache.retract(real));
    started_.pop_back();
  }
  sampled_cache_ = 0;  // the sampled tokens are those of a step taken back
  return Status();
}

Result<Model::Activations> Model::enqueue(std::span<const int32_t> input_ids, bool ids_sampled,
                                          std::span<const uint8_t> attention_mask, int64_t batch,
                                          KvCache& cache, const ForwardOptions& options,
                                          ForwardOutput& out) {
  const ModelConfig& c = config_;
  MISTRAL_RETURN_IF_ERROR(validate_inputs(input_ids, attention_mask, batch, c.vocab_size));
  if (cache.batch() != batch) {
    return error("kv cache was created for batch " + std::to_string(cache.batch()) +
                 ", forward called with batch " + std::to_string(batch));
  }
  if (options.sampler != nullptr && (options.all_logits || options.sampler->rows != batch)) {
    return error("ForwardOptions::sampler: a sampler of " + std::to_string(options.sampler->rows) +
                 " rows needs batch " + std::to_string(options.sampler->rows) +
                 " and all_logits = false (got batch " + std::to_string(batch) +
                 (options.all_logits ? ", all_logits = true)" : ")"));
  }
  if (cache.backend_name() != backend_->name()) {
    return error("kv cache lives in " + cache.backend_name() + " memory but the model runs on " +
                 backend_->name() + ": create it with Model::new_cache (Engine::new_cache)");
  }
  const int64_t T = static_cast<int64_t>(input_ids.size()) / batch;
  MISTRAL_RETURN_IF_ERROR(cache.check_room(T));
  if (cache.length() + T > c.max_position_embeddings) {
    return error("sequence of " + std::to_string(cache.length() + T) +
                 " tokens exceeds max_position_embeddings (" +
                 std::to_string(c.max_position_embeddings) + ")");
  }
  if (!started_.empty() && started_cache_ != cache.id()) {
    return error("start_step: the started steps run on another cache; finish them first");
  }

  const int64_t M = batch * T;  // activation rows
  Backend& be = *backend_;
  MISTRAL_ASSIGN_OR_RETURN(Activations a, activations(M, batch));
  if (options.sampler != nullptr && sampled_.bytes < batch * sizeof(int32_t)) {
    MISTRAL_ASSIGN_OR_RETURN(sampled_, be.allocate(batch * sizeof(int32_t), "sampled token ids"));
  }

  // The inputs, laid out as in a.inputs and uploaded in one copy. Position ids: real tokens
  // count up from the row's history; padding gets 1 as in HF generate.
  const StepInputs& layout = a.input_layout;
  std::vector<uint8_t> staged(layout.bytes, 0);
  for (int64_t b = 0; b < batch; ++b) {
    int64_t next = cache.row_tokens(b);
    for (int64_t t = 0; t < T; ++t) {
      const bool real = attention_mask[b * T + t] != 0;
      const int64_t position = real ? next++ : 1;
      std::memcpy(staged.data() + layout.positions + (b * T + t) * sizeof(int64_t), &position,
                  sizeof(int64_t));
    }
  }
  const int64_t first_seq_index = cache.length();
  std::memcpy(staged.data() + layout.first_seq_index, &first_seq_index, sizeof(int64_t));
  std::memcpy(staged.data() + layout.ids, input_ids.data(), M * sizeof(int32_t));
  std::memcpy(staged.data() + layout.mask, attention_mask.data(), M);
  be.to_device(a.inputs, staged.data(), layout.bytes);
  if (ids_sampled) be.copy(a.ids, sampled_.data, M * sizeof(int32_t));

  out.batch = batch;
  out.tokens = T;
  out.logit_positions = options.all_logits ? T : 1;
  // Everything a recording depends on: shapes, the cache's buffers, the workspace's address.
  const std::vector<uint64_t> key = {static_cast<uint64_t>(batch), static_cast<uint64_t>(T),
                                     options.all_logits, cache.id(),
                                     reinterpret_cast<uint64_t>(workspace_.data)};
  const bool recordable = be.supports_capture() && !options.output_hidden_states;
  bool done = recordable && recording_ && key == recording_key_ && be.replay(recording_.get());
  if (!done) {
    const bool record = recordable && key == last_key_;  // the second call of this shape
    if (record) be.begin_capture();
    run_ops(a, cache, batch, T, options, out);
    if (record) {
      recording_ = be.end_capture();
      recording_key_ = key;
      MISTRAL_CHECK(be.replay(recording_.get())) << "a fresh recording must replay";
    }
    last_key_ = key;
  }
  cache.advance(attention_mask.data(), T, a.mask, a.first_seq_index);
  sampled_cache_ = 0;
  if (options.sampler != nullptr) {
    be.sample_tokens(*options.sampler, a.logits, c.vocab_size, sampled_.as<int32_t>());
    sampled_cache_ = cache.id();
    started_cache_ = cache.id();
  }
  return a;
}

void Model::run_ops(const Activations& a, KvCache& cache, int64_t batch, int64_t T,
                    const ForwardOptions& options, ForwardOutput& out) {
  const ModelConfig& c = config_;
  const int64_t M = batch * T;
  const int64_t H = c.hidden_size;
  Backend& be = *backend_;
  be.embed(weights_.embedding, a.ids, M, a.x);
  if (options.output_hidden_states) out.hidden_states.push_back(download(a.x, M * H));

  AttentionArgs args;
  args.batch = batch;
  args.new_tokens = T;
  args.num_heads = c.num_attention_heads;
  args.num_kv_heads = c.num_key_value_heads;
  args.head_dim = c.head_dim;
  args.first_seq_index = cache.length();
  args.first_seq_index_device = a.first_seq_index;
  args.sliding_window = c.sliding_window.value_or(0);
  args.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  args.new_valid = a.mask;
  args.capacity = cache.capacity();
  args.blocks = cache.block_layout();
  args.cache_dtype = cache.dtype();
  args.slot_seq_index = cache.slot_seq_index();
  args.slot_valid = cache.slot_valid();
  args.q = a.q;
  args.k = a.k;
  args.v = a.v;
  args.out = a.attn;

  const float eps = static_cast<float>(c.rms_norm_eps);
  // One row with joined q|k|v and gate|up matrices (single-sequence decode): each norm, residual
  // add and SwiGLU goes with the matmul next to it (fused_matmul), so the layer is four matmuls
  // and rope_store_attention (one kernel on the GPU). Otherwise each residual add is fused with
  // the norm after it (add_rmsnorm): the attention block's with the MLP norm, the MLP block's with
  // the next layer's attention norm (or the final norm).
  const bool fused = M == 1 && std::all_of(weights_.layers.begin(), weights_.layers.end(),
                                           [](const LayerWeights& w) {
                                             return !w.wqkv.empty() && !w.w_gate_up.empty();
                                           });
  MatmulFusion qkv_in, mlp_in, residual_out;  // qkv: norm; mlp: norm and SwiGLU
  qkv_in.eps = mlp_in.eps = eps;
  qkv_in.scratch = mlp_in.scratch = residual_out.scratch = a.fuse;
  mlp_in.swiglu = true;
  residual_out.residual = true;
  const bool store_early = T == 1;
  if (!fused) be.rmsnorm(a.x, M, weights_.layers.front().attn_norm, eps, a.h);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& w = weights_.layers[l];
    // Attention block (a.h holds the normed input, unless fused).
    if (fused) {
      qkv_in.norm = &w.attn_norm;
      be.fused_matmul(a.x, M, w.wqkv, a.q, qkv_in);
    } else if (M == 1 && !w.wqkv.empty()) {  // one row: q|k|v are adjacent, one matmul writes them
      be.matmul(a.h, M, w.wqkv, a.q);
    } else {
      be.matmul(a.h, M, w.wq, a.q);
      be.matmul(a.h, M, w.wk, a.k);
      be.matmul(a.h, M, w.wv, a.v);
    }
    args.k_cache = cache.keys(l);
    args.v_cache = cache.values(l);
    args.k_scale = cache.key_scales(l);
    args.v_scale = cache.value_scales(l);
    // One new token per row: the cache write goes with rope, before attention (KvCache::write_args
    // says why that is safe), so a backend can do the three in one op.
    if (store_early) {
      be.rope_store_attention(a.q, a.k, a.positions, c.rope_theta,
                              cache.write_args(l, a.k, a.v, T, a.first_seq_index), args);
    } else {
      be.rope_qk(a.q, a.k, M, c.num_attention_heads, c.num_key_value_heads, c.head_dim, a.positions,
                 c.rope_theta);
      be.attention(args);
      cache.store_layer(l, a.k, a.v, T, a.first_seq_index);
    }
    const bool last = l + 1 == c.num_hidden_layers;
    if (fused) {
      be.fused_matmul(a.attn, M, w.wo, a.x, residual_out);
      // MLP block (SwiGLU).
      mlp_in.norm = &w.mlp_norm;
      be.fused_matmul(a.x, M, w.w_gate_up, a.gate, mlp_in);
      be.fused_matmul(a.gate, M, w.w_down, a.x, residual_out);
      if (last) be.rmsnorm(a.x, M, weights_.final_norm, eps, a.h);
    } else {
      be.matmul(a.attn, M, w.wo, a.h);
      be.add_rmsnorm(a.x, a.h, M, w.mlp_norm, eps, a.h);
      // MLP block (SwiGLU).
      if (M == 1 && !w.w_gate_up.empty()) {
        be.matmul(a.h, M, w.w_gate_up, a.gate);
      } else {
        be.matmul(a.h, M, w.w_gate, a.gate);
        be.matmul(a.h, M, w.w_up, a.up);
      }
      be.silu_mul(a.gate, a.up, a.gate, M * c.intermediate_size);
      be.matmul(a.gate, M, w.w_down, a.h);
      be.add_rmsnorm(a.x, a.h, M, last ? weights_.final_norm : weights_.layers[l + 1].attn_norm,
                     eps, a.h);
    }
    if (options.output_hidden_states && !last) {
      out.hidden_states.push_back(download(a.x, M * H));
    }
  }

  if (options.output_hidden_states) out.hidden_states.push_back(download(a.h, M * H));
  const void* head_input = a.h;
  int64_t head_rows = M;
  if (!options.all_logits) {
    head_rows = batch;
    if (T > 1) {
      const size_t row_bytes = H * dtype_size(be.activation_dtype());
      for (int64_t b = 0; b < batch; ++b) {
        be.copy(static_cast<uint8_t*>(a.last) + b * row_bytes,
                static_cast<const uint8_t*>(a.h) + ((b + 1) * T - 1) * row_bytes, row_bytes);
      }
      head_input = a.last;
    }
  }
  be.matmul_f32_out(head_input, head_rows, weights_.lm_head, a.logits);
}

}  // namespace mistral
