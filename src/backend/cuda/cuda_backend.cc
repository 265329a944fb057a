#include "backend/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/pinned_pool.h"
#include "backend/cuda/trace_recorder.h"
#include "core/env.h"
#include "core/half.h"
#include "core/quant.h"

namespace mistral::cuda {
namespace {

constexpr size_t kScratchBytes = size_t{64} << 20;  // split-K partials, dequantized GEMM tiles

const bf16* act(const void* p) { return static_cast<const bf16*>(p); }
bf16* act(void* p) { return static_cast<bf16*>(p); }

// A Tensor whose data (and scales) live in device buffers it keeps alive.
Result<Tensor> upload_tensor(const Tensor& host, cudaStream_t stream, const std::string& what) {
  Tensor t = host;
  auto values = std::make_shared<DeviceBuffer>();
  MISTRAL_ASSIGN_OR_RETURN(*values, DeviceBuffer::allocate(host.value_bytes(), what));
  MISTRAL_CUDA_CHECK(cudaMemcpyAsync(values->data(), host.data, host.value_bytes(),
                                     cudaMemcpyHostToDevice, stream));
  t.data = values->data();
  t.owner = values;
  if (host.quantized()) {
    auto scales = std::make_shared<DeviceBuffer>();
    MISTRAL_ASSIGN_OR_RETURN(*scales, DeviceBuffer::allocate(host.scale_bytes(), what + " scales"));
    MISTRAL_CUDA_CHECK(cudaMemcpyAsync(scales->data(), host.scales, host.scale_bytes(),
                                       cudaMemcpyHostToDevice, stream));
    t.scales = scales->data();
    t.scales_owner = scales;
  }
  t.on_device = true;
  // The host source may be unmapped as soon as this returns.
  MISTRAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  return t;
}

DeviceWeight device_weight(const Tensor& w) {
  MISTRAL_CHECK(w.on_device) << "cuda backend: weight was not placed on the device";
  DeviceWeight d;
  d.format = w.quant == QuantType::kInt8   ? WeightFormat::kInt8
             : w.quant == QuantType::kInt4 ? WeightFormat::kInt4
                                           : WeightFormat::kBF16;
  MISTRAL_CHECK(w.quantized() || w.dtype == DType::kBF16)
      << "cuda backend: dense weights must be bf16, got " << dtype_name(w.dtype);
  d.n = w.shape.at(0);
  d.k = w.shape.at(1);
  d.data = w.data;
  d.scales = static_cast<const __half*>(w.scales);
  return d;
}

// What the kernels' views of a cache write and of attention share, from KvWriteArgs or
// AttentionArgs (bf16 caches only): the shapes, the cache and its layout, the sequence index, and
// the new keys and values.
template <typename Params, typename Args>
Params cache_params(const Args& a) {
  MISTRAL_CHECK(a.cache_dtype == DType::kBF16)
      << "cuda backend: the kv cache must be bf16, got " << dtype_name(a.cache_dtype);
  Params p;
  p.batch = a.batch;
  p.new_tokens = a.new_tokens;
  p.num_kv_heads = a.num_kv_heads;
  p.head_dim = a.head_dim;
  p.capacity = a.capacity;
  p.block_size = a.blocks.block_size;
  p.blocks_per_row = a.blocks.blocks_per_row;
  p.block_table = a.blocks.table;
  p.first_seq_index = a.first_seq_index;
  p.first_seq_index_device = a.first_seq_index_device;
  p.k = act(a.k);
  p.v = act(a.v);
  p.k_cache = act(a.k_cache);
  p.v_cache = act(a.v_cache);
  return p;
}

KvStoreParams kv_store_params(const KvWriteArgs& a) { return cache_params<KvStoreParams>(a); }

AttentionParams attention_params(const AttentionArgs& a) {
  AttentionParams p = cache_params<AttentionParams>(a);
  p.num_heads = a.num_heads;
  p.sliding_window = a.sliding_window;
  p.scale = a.scale;
  p.q = act(a.q);
  p.new_valid = a.new_valid;
  p.slot_seq_index = a.slot_seq_index;
  p.slot_valid = a.slot_valid;
  p.out = act(a.out);
  return p;
}

// Bytes of a sampler block's SampleParams part (rows of them, padded to 256 so that the RngState
// part after it stays aligned).
size_t sampler_params_bytes(int64_t rows) {
  return (rows * sizeof(SampleParams) + 255) / 256 * 256;
}

// A download through a page-locked block of the pool: queued by start_download, its event recorded
// after the copy.
class PinnedDownload final : public Download {
 public:
  PinnedDownload(PinnedPool& pool, PinnedPool::Block* block, size_t bytes)
      : pool_(pool), block_(block), bytes_(bytes) {}
  ~PinnedDownload() override {
    if (block_ != nullptr) pool_.give(block_, nullptr);
  }
  void wait(void* dst_host) override {
    MISTRAL_CHECK(block_ != nullptr) << "Download::wait called twice";
    MISTRAL_CUDA_CHECK(cudaEventSynchronize(block_->done));
    std::memcpy(dst_host, block_->host, bytes_);
    pool_.give(block_, nullptr);
    block_ = nullptr;
  }

 private:
  PinnedPool& pool_;
  PinnedPool::Block* block_;
  size_t bytes_;
};

class CudaBackend final : public Backend {
 public:
  static Result<std::unique_ptr<Backend>> create(int device) {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
      (void)cudaGetLastError();
      return error(std::string("device cuda:") + std::to_string(device) +
                   ": no CUDA device is available (" +
                   (err != cudaSuccess ? cudaGetErrorString(err) : "0 devices") + ")");
    }
    if (device < 0 || device >= count) {
      return error("device cuda:" + std::to_string(device) + ": this machine has " +
                   std::to_string(count) +
                   " CUDA device(s), cuda:0 to cuda:" + std::to_string(count - 1));
    }
    MISTRAL_CUDA_CHECK(cudaSetDevice(device));
    std::unique_ptr<CudaBackend> be(new CudaBackend());
    be->device_ = device;
    MISTRAL_CUDA_CHECK(cudaStreamCreateWithFlags(&be->stream_, cudaStreamNonBlocking));
    MISTRAL_ASSIGN_OR_RETURN(be->ctx_, KernelContext::create(be->stream_, kScratchBytes));
    MISTRAL_ASSIGN_OR_RETURN(be->trace_, TraceRecorder::start_if_asked(be->stream_));
    return std::unique_ptr<Backend>(std::move(be));
  }

  ~CudaBackend() override {
    trace_.reset();  // waits for the stream, then writes the timeline (diagnostic builds)
    ctx_.reset();    // synchronizes the stream before its buffers go
    pinned_.reset();
    inv_freq_.clear();
    if (stream_ != nullptr) MISTRAL_CUDA_CHECK(cudaStreamDestroy(stream_));
  }

  std::string name() const override { return "cuda:" + std::to_string(device_); }
  DType activation_dtype() const override { return DType::kBF16; }

  Result<Buffer> allocate(size_t bytes, const std::string& what) override {
    auto block = std::make_shared<DeviceBuffer>();
    MISTRAL_ASSIGN_OR_RETURN(*block, DeviceBuffer::allocate(std::max<size_t>(bytes, 1), what));
    Buffer b;
    b.data = block->data();
    b.bytes = bytes;
    b.owner = std::move(block);
    return b;
  }
  void to_device(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    // Small copies go through a page-locked block, so they never wait for the ops queued before
    // them (Model::start_step queues a step's inputs while the step before still runs). From
    // pageable memory the call returns once the source has been staged. Either way the caller
    // may reuse the source at once.
    PinnedPool::Block* block = bytes <= PinnedPool::kMaxBytes ? pinned_->take() : nullptr;
    if (block == nullptr) {
      MISTRAL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
      return;
    }
    std::memcpy(block->host, src, bytes);
    MISTRAL_CUDA_CHECK(cudaMemcpyAsync(dst, block->host, bytes, cudaMemcpyHostToDevice, stream_));
    pinned_->give(block, stream_);
  }
  std::unique_ptr<Download> start_download(const void* src, size_t bytes) override {
    PinnedPool::Block* block = bytes <= PinnedPool::kMaxBytes ? pinned_->take() : nullptr;
    if (block == nullptr) return Backend::start_download(src, bytes);
    if (bytes != 0) {
      MISTRAL_CUDA_CHECK(cudaMemcpyAsync(block->host, src, bytes, cudaMemcpyDeviceToHost, stream_));
    }
    MISTRAL_CUDA_CHECK(cudaEventRecord(block->done, stream_));
    return std::make_unique<PinnedDownload>(*pinned_, block, bytes);
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    if (bytes != 0) {
      MISTRAL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    }
    MISTRAL_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    MISTRAL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }

  Result<Tensor> place_weight(const Tensor& host, WeightUse use, const std::string& what) override {
    if (host.empty()) return host;
    MISTRAL_CUDA_CHECK(cudaSetDevice(device_));
    if (use == WeightUse::kNorm || use == WeightUse::kEmbedding) {
      // Looked up or multiplied element-wise: bf16 rows (a quantized table is expanded).
      Tensor dense = host.quantized() ? dequantize_matrix(host) : host;
      if (dense.dtype != DType::kBF16) dense = convert_tensor(dense, DType::kBF16);
      return upload_tensor(dense, stream_, what);
    }
    if (host.shape.size() != 2) return error(what + ": expected a matrix");
    const int64_t k = host.shape[1];
    if (host.quantized()) {
      if (k % kQuantGroup != 0) {
        return error(what + ": in_features " + std::to_string(k) +
                     " is not a multiple of 32, which the quantized CUDA kernels need");
      }
      MISTRAL_ASSIGN_OR_RETURN(Tensor t, upload_tensor(host, stream_, what));
      MISTRAL_RETURN_IF_ERROR(reserve_tiles(t, what));
      return t;
    }
    if (k % 8 != 0) {
      return error(what + ": in_features " + std::to_string(k) +
                   " is not a multiple of 8, which the CUDA kernels need");
    }
    if (host.dtype == DType::kBF16) return upload_tensor(host, stream_, what);
    return upload_tensor(convert_tensor(host, DType::kBF16), stream_, what);
  }

  Result<std::vector<Tensor>> place_concatenated(const std::vector<Tensor>& hosts,
                                                 const std::string& what) override {
    if (!join_enabled_) return std::vector<Tensor>();
    std::vector<Tensor> parts;
    for (const Tensor& h : hosts) {
      if (h.empty() || h.shape.size() != 2) return std::vector<Tensor>();
      parts.push_back(h.quantized() || h.dtype == DType::kBF16 ? h
                                                               : convert_tensor(h, DType::kBF16));
      if (parts.back().shape[1] != parts.front().shape[1] ||
          parts.back().quant != parts.front().quant) {
        return std::vector<Tensor>();  // not joinable: placed one by one
      }
    }
    if (parts.empty()) return parts;
    const int64_t k = parts.front().shape[1];
    if (k % (parts.front().quantized() ? kQuantGroup : 8) != 0) {
      return error(what + ": in_features " + std::to_string(k) +
                   " is not a multiple of what the CUDA kernels need (8, or 32 when quantized)");
    }
    size_t value_bytes = 0, scale_bytes = 0;
    int64_t rows = 0;
    for (const Tensor& p : parts) {
      value_bytes += p.value_bytes();
      scale_bytes += p.scale_bytes();
      rows += p.shape[0];
    }
    MISTRAL_CUDA_CHECK(cudaSetDevice(device_));
    auto values = std::make_shared<DeviceBuffer>();
    MISTRAL_ASSIGN_OR_RETURN(*values, DeviceBuffer::allocate(value_bytes, what));
    std::shared_ptr<DeviceBuffer> scales;
    if (scale_bytes > 0) {
      scales = std::make_shared<DeviceBuffer>();
      MISTRAL_ASSIGN_OR_RETURN(*scales, DeviceBuffer::allocate(scale_bytes, what + " scales"));
    }
    Tensor whole = parts.front();
    whole.shape = {rows, k};
    whole.data = values->data();
    whole.owner = values;
    whole.scales = scales ? scales->data() : nullptr;
    whole.scales_owner = scales;
    whole.on_device = true;
    std::vector<Tensor> out = {whole};
    size_t value_offset = 0, scale_offset = 0;
    for (const Tensor& p : parts) {
      Tensor view = whole;
      view.shape = p.shape;
      view.data = values->as<uint8_t>() + value_offset;
      MISTRAL_CUDA_CHECK(cudaMemcpy(values->as<uint8_t>() + value_offset, p.data, p.value_bytes(),
                                    cudaMemcpyHostToDevice));
      value_offset += p.value_bytes();
      if (scales) {
        view.scales = scales->as<uint8_t>() + scale_offset;
        MISTRAL_CUDA_CHECK(cudaMemcpy(scales->as<uint8_t>() + scale_offset, p.scales,
                                      p.scale_bytes(), cudaMemcpyHostToDevice));
        scale_offset += p.scale_bytes();
      }
      out.push_back(std::move(view));
    }
    // The joined matrix serves single-row decode only (the GEMV); the parts take the GEMM.
    for (size_t i = 1; i < out.size(); ++i) MISTRAL_RETURN_IF_ERROR(reserve_tiles(out[i], what));
    return out;
  }

  void matmul(const void* x, int64_t m, const Tensor& w, void* y) override {
    const DeviceWeight d = device_weight(w);
    if (quantizes_in_gemv(d, m)) return gemv_fused(*ctx_, act(x), d, GemvFusion(), act(y));
    reserve_linear_scratch(d, m);
    linear(*ctx_, act(x), m, d, act(y));
  }
  void matmul_f32_out(const void* x, int64_t m, const Tensor& w, float* y) override {
    const DeviceWeight d = device_weight(w);
    if (quantizes_in_gemv(d, m)) return gemv_fused(*ctx_, act(x), d, GemvFusion(), y);
    reserve_linear_scratch(d, m);
    linear(*ctx_, act(x), m, d, y);
  }
  // One row: the norm, residual add or SwiGLU in the GEMV's kernel (gemv_fused); else the ops
  // one after another.
  void fused_matmul(const void* x, int64_t m, const Tensor& w, void* y,
                    const MatmulFusion& f) override {
    const DeviceWeight d = device_weight(w);
    GemvFusion g;
    if (f.norm != nullptr) {
      MISTRAL_CHECK(f.norm->on_device && f.norm->dtype == DType::kBF16 &&
                    f.norm->shape.at(0) == d.k)
          << "cuda backend: a fused norm needs bf16 weights of in_features " << d.k;
      g.norm = f.norm->as<bf16>();
      g.eps = f.eps;
    }
    g.output = f.swiglu     ? GemvOutput::kSwiGLU
               : f.residual ? GemvOutput::kAddTo
                            : GemvOutput::kStore;
    if (!fuse_enabled_ || m != 1 || (f.swiglu && f.residual) || !gemv_fused_supported(d, g)) {
      return Backend::fused_matmul(x, m, w, y, f);
    }
    gemv_fused(*ctx_, act(x), d, g, act(y));
  }
  void embed(const Tensor& table, const int32_t* ids, int64_t n, void* out) override {
    MISTRAL_CHECK(table.on_device && table.dtype == DType::kBF16 && !table.quantized())
        << "cuda backend: the embedding table must be placed as bf16";
    cuda::embed<bf16>(*ctx_, table.as<bf16>(), table.shape[0], table.shape[1], ids, n, act(out));
  }
  void rmsnorm(const void* x, int64_t m, const Tensor& weight, float eps, void* y) override {
    MISTRAL_CHECK(weight.on_device && weight.dtype == DType::kBF16)
        << "cuda backend: norm weights must be placed as bf16";
    cuda::rmsnorm<bf16>(*ctx_, act(x), m, weight.shape[0], weight.as<bf16>(), eps, act(y));
  }
  void rope(void* x, int64_t tokens, int64_t heads, int64_t head_dim, const int64_t* positions,
            double theta) override {
    cuda::rope<bf16>(*ctx_, act(x), tokens, heads, head_dim, positions, inv_freq(head_dim, theta));
  }
  void rope_qk(void* q, void* k, int64_t tokens, int64_t heads, int64_t kv_heads, int64_t head_dim,
               const int64_t* positions, double theta) override {
    if (!fuse_enabled_) {
      return Backend::rope_qk(q, k, tokens, heads, kv_heads, head_dim, positions, theta);
    }
    cuda::rope_qk<bf16>(*ctx_, act(q), act(k), tokens, heads, kv_heads, head_dim, positions,
                        inv_freq(head_dim, theta));
  }
  void add_rmsnorm(void* x, const void* y, int64_t m, const Tensor& weight, float eps,
                   void* h) override {
    if (!fuse_enabled_) return Backend::add_rmsnorm(x, y, m, weight, eps, h);
    MISTRAL_CHECK(weight.on_device && weight.dtype == DType::kBF16)
        << "cuda backend: norm weights must be placed as bf16";
    cuda::add_rmsnorm<bf16>(*ctx_, act(x), act(y), m, weight.shape[0], weight.as<bf16>(), eps,
                            act(h));
  }
  void attention(const AttentionArgs& a) override {
    const AttentionParams p = attention_params(a);
    reserve_decode_scratch(p);
    cuda::attention(*ctx_, p);
  }
  void rope_store_attention(void* q, void* k, const int64_t* positions, double theta,
                            const KvWriteArgs& store, const AttentionArgs& a) override {
    // The kernel writes the new token where attention's own cache layout puts it.
    const bool same_buffers = a.q == q && a.k == k && store.k == k && store.v == a.v &&
                              store.k_cache == a.k_cache && store.v_cache == a.v_cache &&
                              store.cache_dtype == a.cache_dtype && store.capacity == a.capacity &&
                              store.blocks.table == a.blocks.table &&
                              store.blocks.block_size == a.blocks.block_size &&
                              store.first_seq_index == a.first_seq_index &&
                              store.first_seq_index_device == a.first_seq_index_device;
    if (!fuse_enabled_ || !rope_in_attention_ || !same_buffers) {
      return Backend::rope_store_attention(q, k, positions, theta, store, a);
    }
    const AttentionParams p = attention_params(a);
    if (!attention_decode_rope_supported(p)) {
      return Backend::rope_store_attention(q, k, positions, theta, store, a);
    }
    reserve_decode_scratch(p);
    DecodeRope r;
    r.positions = positions;
    r.inv_freq = inv_freq(p.head_dim, theta);
    r.k_cache = act(store.k_cache);
    r.v_cache = act(store.v_cache);
    cuda::attention_decode_rope_store(*ctx_, p, r);
  }
  void store_kv(const KvWriteArgs& a) override { cuda::store_kv(*ctx_, kv_store_params(a)); }
  void rope_qk_store_kv(void* q, void* k, int64_t tokens, int64_t heads, int64_t kv_heads,
                        int64_t head_dim, const int64_t* positions, double theta,
                        const KvWriteArgs& store) override {
    if (!fuse_enabled_ || store.k != k || tokens != store.batch * store.new_tokens ||
        kv_heads != store.num_kv_heads || head_dim != store.head_dim) {
      return Backend::rope_qk_store_kv(q, k, tokens, heads, kv_heads, head_dim, positions, theta,
                                       store);
    }
    cuda::rope_qk_store_kv(*ctx_, act(q), heads, positions, inv_freq(head_dim, theta),
                           kv_store_params(store));
  }
  void record_kv_slots(int64_t batch, int64_t new_tokens, int64_t first_seq_index,
                       const int64_t* first_seq_index_device, int64_t capacity,
                       const uint8_t* new_valid, int64_t* slot_seq_index,
                       uint8_t* slot_valid) override {
    cuda::record_kv_slots(*ctx_, batch, new_tokens, first_seq_index, first_seq_index_device,
                          capacity, new_valid, slot_seq_index, slot_valid);
  }
  void silu_mul(const void* gate, const void* up, void* out, int64_t n) override {
    cuda::silu_mul<bf16>(*ctx_, act(gate), act(up), act(out), n);
  }
  void add(void* x, const void* y, int64_t n) override {
    cuda::add<bf16>(*ctx_, act(x), act(y), n);
  }

  bool supports_weight_dtype(DType dtype) const override { return dtype == DType::kBF16; }
  DType preferred_weight_dtype() const override { return DType::kBF16; }
  bool supports_quantization(QuantType type) const override { return true; }
  bool supports_kv_cache_dtype(DType dtype) const override { return dtype == DType::kBF16; }
  DType default_kv_cache_dtype() const override { return DType::kBF16; }
  bool wants_warm_up() const override { return true; }

  // On-device sampling (sampling.cu): per-row SampleParams and RngState in one device block.
  bool supports_sampling() const override { return true; }
  Result<SamplerState> new_sampler(const std::vector<SamplingRow>& rows) override {
    const int64_t n = static_cast<int64_t>(rows.size());
    const size_t params_bytes = sampler_params_bytes(n);
    MISTRAL_ASSIGN_OR_RETURN(
        DeviceBuffer block,
        DeviceBuffer::allocate(params_bytes + n * sizeof(RngState),
                               "sampler state of " + std::to_string(n) + " rows"));
    auto owned = std::make_shared<DeviceBuffer>(std::move(block));
    std::vector<SampleParams> params(n);
    std::vector<uint64_t> seeds(n);
    for (int64_t r = 0; r < n; ++r) {
      params[r].greedy = rows[r].greedy ? 1 : 0;
      params[r].temperature = rows[r].temperature;
      params[r].top_k = rows[r].top_k;
      params[r].top_p = rows[r].top_p;
      seeds[r] = rows[r].seed;
    }
    if (n > 0) {
      to_device(owned->data(), params.data(), n * sizeof(SampleParams));
      init_rng(*ctx_, seeds.data(), n,
               reinterpret_cast<RngState*>(owned->as<uint8_t>() + params_bytes));
    }
    return SamplerState{n, std::move(owned)};
  }
  void sample_tokens(const SamplerState& sampler, const float* logits, int64_t vocab,
                     int32_t* ids) override {
    const auto* block = static_cast<const DeviceBuffer*>(sampler.state.get());
    sample(*ctx_, logits, sampler.rows, vocab, block->as<const SampleParams>(),
           reinterpret_cast<RngState*>(block->as<uint8_t>() + sampler_params_bytes(sampler.rows)),
           ids);
  }

  // CUDA graphs; MISTRAL_CUDA_GRAPHS=0 turns them off (every op launched on its own).

  bool supports_capture() const override { return graphs_enabled_; }
  void begin_capture() override {
    MISTRAL_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  }
  std::shared_ptr<void> end_capture() override {
    cudaGraph_t graph = nullptr;
    MISTRAL_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    auto r = std::make_shared<Recording>();
    MISTRAL_CUDA_CHECK(cudaGraphInstantiate(&r->exec, graph, 0));
    MISTRAL_CUDA_CHECK(cudaGraphDestroy(graph));
    r->scratch = ctx_->scratch();
    return r;
  }
  bool replay(const void* recording) override {
    const auto* r = static_cast<const Recording*>(recording);
    if (r->scratch != ctx_->scratch()) return false;  // the scratch grew since: record again
    MISTRAL_CUDA_CHECK(cudaGraphLaunch(r->exec, stream_));
    return true;
  }
  double peak_memory_bandwidth() const override {
    int clock_khz = 0, bus_bits = 0;
    if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device_) != cudaSuccess ||
        cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device_) !=
            cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return 2.0 * clock_khz * 1e3 * (bus_bits / 8.0);  // double data rate
  }
  std::string description() const override { return name() + " (" + ctx_->props().name + ")"; }

 private:
  CudaBackend() = default;

  void reserve(size_t bytes) {
    const Status s = ctx_->reserve_scratch(bytes);
    MISTRAL_CHECK(s.ok()) << s.message();
  }
  // One row of x times int8 / int4 weights: the kernel quantizes x itself (no kernel before it).
  bool quantizes_in_gemv(const DeviceWeight& w, int64_t m) const {
    return fuse_enabled_ && m == 1 && w.format != WeightFormat::kBF16 &&
           gemv_fused_supported(w, GemvFusion());
  }
  // The scratch a quantized weight's GEMMs take (dequantized tiles, split-k sums), at load: what
  // linear() needs for any m above the GEMV's rows.
  Status reserve_tiles(const Tensor& w, const std::string& what) {
    if (!w.quantized()) return Status::ok_status();
    const Status s =
        ctx_->reserve_scratch(linear_scratch_bytes(*ctx_, device_weight(w), kMaxGemvRows + 1));
    if (!s.ok())
      return error(what +
                   ": scratch for its GEMM (dequantized tiles, split-k sums): " + s.message());
    return s;
  }
  // The scratch linear() needs for m rows of x. (Quantized weights reserve their GEMMs' when
  // placed, so that the first prefill does not wait for the allocation.)
  void reserve_linear_scratch(const DeviceWeight& w, int64_t m) {
    reserve(linear_scratch_bytes(*ctx_, w, m));
  }
  // The scratch decode attention needs for these parameters, when it is the kernel cuda::attention
  // takes for them.
  void reserve_decode_scratch(const AttentionParams& p) {
    if (uses_decode_attention(p)) reserve(attention_decode_scratch_bytes(*ctx_, p));
  }

  // inv_freq of rope, computed once per (head_dim, theta) as the CPU computes it.
  const float* inv_freq(int64_t head_dim, double theta) {
    auto key = std::make_pair(head_dim, theta);
    auto it = inv_freq_.find(key);
    if (it == inv_freq_.end()) {
      const std::vector<float> host = rope_inv_freq(head_dim, theta);
      Result<DeviceBuffer> buffer =
          DeviceBuffer::allocate(host.size() * sizeof(float), "rope frequencies");
      MISTRAL_CHECK(buffer.ok()) << buffer.status().message();
      MISTRAL_CUDA_CHECK(cudaMemcpy(buffer->data(), host.data(), host.size() * sizeof(float),
                                    cudaMemcpyHostToDevice));
      it = inv_freq_.emplace(key, std::move(buffer).value()).first;
    }
    return it->second.as<float>();
  }

  // An instantiated graph and the scratch block its kernels were given.
  struct Recording {
    cudaGraphExec_t exec = nullptr;
    const void* scratch = nullptr;
    ~Recording() {
      if (exec != nullptr) MISTRAL_CUDA_CHECK(cudaGraphExecDestroy(exec));
    }
  };

  int device_ = 0;
  bool graphs_enabled_ = env_enabled("MISTRAL_CUDA_GRAPHS");
  // MISTRAL_CUDA_JOIN=0: q/k/v and gate/up stay separate matrices (for comparisons).
  bool join_enabled_ = env_enabled("MISTRAL_CUDA_JOIN");
  // MISTRAL_CUDA_FUSE=0: rope_qk, add_rmsnorm and fused_matmul run as their separate ops, and
  // one-row quantized matmuls quantize x in a kernel of its own (for comparisons).
  bool fuse_enabled_ = env_enabled("MISTRAL_CUDA_FUSE");
  // Rope and the cache write inside decode attention (rope_store_attention); MISTRAL_ATTN_ROPE=0
  // keeps them in rope_qk_store_kv's kernel, for comparisons.
  bool rope_in_attention_ = env_enabled("MISTRAL_ATTN_ROPE");
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<KernelContext> ctx_;
  std::unique_ptr<TraceRecorder> trace_;  // MISTRAL_CUDA_TRACE_OUT (trace_recorder.h)
  std::unique_ptr<PinnedPool> pinned_ = std::make_unique<PinnedPool>();
  std::map<std::pair<int64_t, double>, DeviceBuffer> inv_freq_;
};

}  // namespace

Result<std::unique_ptr<Backend>> make_cuda_backend(int device) {
  return CudaBackend::create(device);
}

}  // namespace mistral::cuda
