#include "model/model.h"

#include <algorithm>
#include <cmath>

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

Result<ForwardOutput> Model::forward(std::span<const int32_t> input_ids,
                                     std::span<const uint8_t> attention_mask, int64_t batch,
                                     KvCache& cache, const ForwardOptions& options) {
  const ModelConfig& c = config_;
  MISTRAL_RETURN_IF_ERROR(validate_inputs(input_ids, attention_mask, batch, c.vocab_size));
  if (cache.batch() != batch) {
    return error("kv cache was created for batch " + std::to_string(cache.batch()) +
                 ", forward called with batch " + std::to_string(batch));
  }
  const int64_t T = static_cast<int64_t>(input_ids.size()) / batch;
  MISTRAL_RETURN_IF_ERROR(cache.check_room(T));
  if (cache.length() + T > c.max_position_embeddings) {
    return error("sequence of " + std::to_string(cache.length() + T) +
                 " tokens exceeds max_position_embeddings (" +
                 std::to_string(c.max_position_embeddings) + ")");
  }

  const int64_t M = batch * T;  // activation rows
  const int64_t H = c.hidden_size;
  Backend& be = *backend_;

  // Position ids: real tokens count up from the row's history; padding gets 1 as in HF generate.
  std::vector<int64_t> positions(M);
  for (int64_t b = 0; b < batch; ++b) {
    int64_t next = cache.row_tokens(b);
    for (int64_t t = 0; t < T; ++t) {
      const bool real = attention_mask[b * T + t] != 0;
      positions[b * T + t] = real ? next++ : 1;
    }
  }

  std::vector<float> x(M * H), h(M * H);
  std::vector<float> q(M * c.q_dim()), k(M * c.kv_dim()), v(M * c.kv_dim()), attn(M * c.q_dim());
  std::vector<float> gate(M * c.intermediate_size), up(M * c.intermediate_size);

  ForwardOutput out;
  out.batch = batch;
  out.tokens = T;
  be.embed(weights_.embedding, input_ids.data(), M, x.data());
  if (options.output_hidden_states) out.hidden_states.push_back(x);

  AttentionArgs args;
  args.batch = batch;
  args.new_tokens = T;
  args.num_heads = c.num_attention_heads;
  args.num_kv_heads = c.num_key_value_heads;
  args.head_dim = c.head_dim;
  args.first_seq_index = cache.length();
  args.sliding_window = c.sliding_window.value_or(0);
  args.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  args.new_valid = attention_mask.data();
  args.capacity = cache.capacity();
  args.cache_dtype = cache.dtype();
  args.slot_seq_index = cache.slot_seq_index();
  args.slot_valid = cache.slot_valid();

  const float eps = static_cast<float>(c.rms_norm_eps);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& w = weights_.layers[l];
    // Attention block.
    be.rmsnorm(x.data(), M, w.attn_norm, eps, h.data());
    be.matmul(h.data(), M, w.wq, q.data());
    be.matmul(h.data(), M, w.wk, k.data());
    be.matmul(h.data(), M, w.wv, v.data());
    be.rope(q.data(), M, c.num_attention_heads, c.head_dim, positions.data(), c.rope_theta);
    be.rope(k.data(), M, c.num_key_value_heads, c.head_dim, positions.data(), c.rope_theta);
    args.q = q.data();
    args.k = k.data();
    args.v = v.data();
    args.k_cache = cache.keys(l);
    args.v_cache = cache.values(l);
    args.k_scale = cache.key_scales(l);
    args.v_scale = cache.value_scales(l);
    args.out = attn.data();
    be.attention(args);
    cache.store_layer(l, k.data(), v.data(), T);
    be.matmul(attn.data(), M, w.wo, h.data());
    be.add(x.data(), h.data(), M * H);
    // MLP block (SwiGLU).
    be.rmsnorm(x.data(), M, w.mlp_norm, eps, h.data());
    be.matmul(h.data(), M, w.w_gate, gate.data());
    be.matmul(h.data(), M, w.w_up, up.data());
    be.silu_mul(gate.data(), up.data(), gate.data(), M * c.intermediate_size);
    be.matmul(gate.data(), M, w.w_down, h.data());
    be.add(x.data(), h.data(), M * H);
    if (options.output_hidden_states && l + 1 < c.num_hidden_layers) out.hidden_states.push_back(x);
  }
  cache.advance(attention_mask.data(), T);

  be.rmsnorm(x.data(), M, weights_.final_norm, eps, h.data());
  if (options.output_hidden_states) out.hidden_states.push_back(h);
  if (options.all_logits) {
    out.logit_positions = T;
    out.logits.resize(M * c.vocab_size);
    be.matmul(h.data(), M, weights_.lm_head, out.logits.data());
  } else {
    out.logit_positions = 1;
    std::vector<float> last(batch * H);
    for (int64_t b = 0; b < batch; ++b) {
      std::copy_n(h.data() + ((b + 1) * T - 1) * H, H, last.data() + b * H);
    }
    out.logits.resize(batch * c.vocab_size);
    be.matmul(last.data(), batch, weights_.lm_head, out.logits.data());
  }
  return out;
}

}  // namespace mistral
