// RecordingCpuBackend: the CPU backend behind the parts of Backend a device backend has, for
// checking the model's side of them on the CPU. Ops issued between begin_capture and end_capture
// are kept as closures and run again by replay, reading the step's sequence index from backend
// memory (first_seq_index_device) as the CUDA kernels do; place_concatenated joins q/k/v and
// gate/up into one host matrix with row views (join); with `sample`, host Samplers sample behind
// Backend::sample_tokens; with `defer`, ops wait in a queue until a download needs them, as on a
// device stream. Counters record what the model asked for.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "sampling/sampler.h"

namespace mistral::testing {

class RecordingCpuBackend final : public Backend {
 public:
  explicit RecordingCpuBackend(bool join) : cpu_(make_cpu_backend()), join_(join) {}

  int recordings = 0, replays = 0, joined = 0, sampled = 0, fused = 0;
  bool sample = false;  // offer sampling on the backend
  // Queue every op and host-to-device copy, as a device stream does, and run them only when a
  // download needs their results (to_host, Download::wait): what the model reads back must
  // come through those, in order.
  bool defer = false;
  size_t largest_download = 0;  // bytes of the largest to_host

  std::string name() const override { return "cpu"; }  // host memory, shared with the CPU's
  DType activation_dtype() const override { return DType::kF32; }
  Result<Buffer> allocate(size_t bytes, const std::string& what) override {
    Result<Buffer> made = cpu_->allocate(bytes, what);
    if (!made.ok() || !defer) return made;
    // Memory is freed only once the queued ops that may use it have run, as a device's free
    // waits for them.
    Buffer b = std::move(made).value();
    b.owner = std::shared_ptr<void>(b.data, [this, inner = b.owner](void*) mutable {
      run_queued();
      inner.reset();
    });
    return b;
  }
  void to_device(void* dst, const void* src, size_t bytes) override {
    EXPECT_FALSE(capturing_) << "host copy while recording";
    auto staged = std::make_shared<std::vector<uint8_t>>(static_cast<const uint8_t*>(src),
                                                         static_cast<const uint8_t*>(src) + bytes);
    issue([=, this] { cpu_->to_device(dst, staged->data(), bytes); });
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    EXPECT_FALSE(capturing_) << "host copy while recording";
    largest_download = std::max(largest_download, bytes);
    run_queued();
    cpu_->to_host(dst, src, bytes);
  }
  std::unique_ptr<Download> start_download(const void* src, size_t bytes) override {
    EXPECT_FALSE(capturing_) << "host copy while recording";
    largest_download = std::max(largest_download, bytes);
    auto landed = std::make_shared<std::vector<uint8_t>>(bytes);
    issue([=, this] { cpu_->to_host(landed->data(), src, bytes); });
    return std::make_unique<QueuedDownload>(this, landed);
  }
  // Ops queued (defer) and not run yet.
  size_t queued() const { return queue_.size(); }
  void copy(void* dst, const void* src, size_t bytes) override {
    issue([=, this] { cpu_->copy(dst, src, bytes); });
  }
  Result<std::vector<Tensor>> place_concatenated(const std::vector<Tensor>& hosts,
                                                 const std::string& what) override {
    if (!join_) return std::vector<Tensor>();
    for (const Tensor& h : hosts) {
      if (h.quantized() || h.dtype != hosts[0].dtype || h.shape[1] != hosts[0].shape[1]) {
        return std::vector<Tensor>();
      }
    }
    int64_t rows = 0;
    for (const Tensor& h : hosts) rows += h.shape[0];
    Tensor whole = Tensor::allocate(hosts[0].dtype, {rows, hosts[0].shape[1]});
    std::vector<Tensor> out = {whole};
    size_t offset = 0;
    for (const Tensor& h : hosts) {
      std::memcpy(static_cast<uint8_t*>(whole.mutable_data()) + offset, h.data, h.num_bytes());
      Tensor view = whole;
      view.shape = h.shape;
      view.data = static_cast<const uint8_t*>(whole.data) + offset;
      offset += h.num_bytes();
      out.push_back(view);
    }
    ++joined;
    return out;
  }

  void matmul(const void* x, int64_t m, const Tensor& w, void* y) override {
    issue([=, this, &w] { cpu_->matmul(x, m, w, y); });
  }
  void matmul_f32_out(const void* x, int64_t m, const Tensor& w, float* y) override {
    issue([=, this, &w] { cpu_->matmul_f32_out(x, m, w, y); });
  }
  void embed(const Tensor& table, const int32_t* ids, int64_t n, void* out) override {
    issue([=, this, &table] { cpu_->embed(table, ids, n, out); });
  }
  void rmsnorm(const void* x, int64_t m, const Tensor& weight, float eps, void* y) override {
    issue([=, this, &weight] { cpu_->rmsnorm(x, m, weight, eps, y); });
  }
  void rope(void* x, int64_t tokens, int64_t heads, int64_t head_dim, const int64_t* positions,
            double theta) override {
    issue([=, this] { cpu_->rope(x, tokens, heads, head_dim, positions, theta); });
  }
  void attention(const AttentionArgs& args) override {
    EXPECT_NE(args.first_seq_index_device, nullptr);
    issue([copy = args, this]() mutable {
      copy.first_seq_index = *copy.first_seq_index_device;  // what a recorded kernel reads
      cpu_->attention(copy);
    });
  }
  void store_kv(const KvWriteArgs& args) override {
    EXPECT_NE(args.first_seq_index_device, nullptr);
    issue([copy = args, this]() mutable {
      copy.first_seq_index = *copy.first_seq_index_device;
      cpu_->store_kv(copy);
    });
  }
  void record_kv_slots(int64_t batch, int64_t new_tokens, int64_t first_seq_index,
                       const int64_t* first_seq_index_device, int64_t capacity,
                       const uint8_t* new_valid, int64_t* slot_seq_index,
                       uint8_t* slot_valid) override {
    issue([=, this] {
      cpu_->record_kv_slots(batch, new_tokens,
                            first_seq_index_device ? *first_seq_index_device : first_seq_index,
                            nullptr, capacity, new_valid, slot_seq_index, slot_valid);
    });
  }
  void silu_mul(const void* gate, const void* up, void* out, int64_t n) override {
    issue([=, this] { cpu_->silu_mul(gate, up, out, n); });
  }
  void add(void* x, const void* y, int64_t n) override {
    issue([=, this] { cpu_->add(x, y, n); });
  }
  // Single-row decode over joined matrices goes through fused_matmul; its default runs the ops
  // above (so they are recorded like any other).
  void fused_matmul(const void* x, int64_t m, const Tensor& w, void* y,
                    const MatmulFusion& fusion) override {
    ++fused;
    Backend::fused_matmul(x, m, w, y, fusion);
  }

  bool supports_sampling() const override { return sample; }
  Result<SamplerState> new_sampler(const std::vector<SamplingRow>& rows) override {
    auto samplers = std::make_shared<std::vector<Sampler>>();
    for (const SamplingRow& r : rows) {
      SamplingParams p;
      p.greedy = r.greedy;
      p.temperature = r.temperature;
      p.top_k = r.top_k;
      p.top_p = r.top_p;
      p.seed = r.seed;
      samplers->emplace_back(p);
    }
    return SamplerState{static_cast<int64_t>(rows.size()), samplers};
  }
  void sample_tokens(const SamplerState& sampler, const float* logits, int64_t vocab,
                     int32_t* ids) override {
    EXPECT_FALSE(capturing_);
    auto samplers = std::static_pointer_cast<std::vector<Sampler>>(sampler.state);
    const int64_t rows = sampler.rows;
    issue([=] {
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<float> row(logits + r * vocab, logits + (r + 1) * vocab);
        ids[r] = (*samplers)[r].sample(row, {});
      }
    });
    ++sampled;
  }

  bool supports_capture() const override { return true; }
  void begin_capture() override {
    ASSERT_FALSE(capturing_);
    capturing_ = true;
    ops_.clear();
  }
  std::shared_ptr<void> end_capture() override {
    capturing_ = false;
    ++recordings;
    return std::make_shared<std::vector<std::function<void()>>>(std::move(ops_));
  }
  bool replay(const void* recording) override {
    ++replays;
    for (const auto& op : *static_cast<const std::vector<std::function<void()>>*>(recording)) {
      issue(op);
    }
    return true;
  }

  bool supports_weight_dtype(DType dtype) const override {
    return cpu_->supports_weight_dtype(dtype);
  }
  DType preferred_weight_dtype() const override { return cpu_->preferred_weight_dtype(); }
  bool supports_quantization(QuantType type) const override {
    return cpu_->supports_quantization(type);
  }
  bool supports_kv_cache_dtype(DType dtype) const override {
    return cpu_->supports_kv_cache_dtype(dtype);
  }
  DType default_kv_cache_dtype() const override { return cpu_->default_kv_cache_dtype(); }

 private:
  // A download that lands when the queue before it has run.
  class QueuedDownload final : public Download {
   public:
    QueuedDownload(RecordingCpuBackend* backend, std::shared_ptr<std::vector<uint8_t>> landed)
        : backend_(backend), landed_(std::move(landed)) {}
    void wait(void* dst_host) override {
      backend_->run_queued();
      if (!landed_->empty()) std::memcpy(dst_host, landed_->data(), landed_->size());
    }

   private:
    RecordingCpuBackend* backend_;
    std::shared_ptr<std::vector<uint8_t>> landed_;
  };

  void issue(std::function<void()> op) {
    if (capturing_) {
      ops_.push_back(std::move(op));
    } else if (defer) {
      queue_.push_back(std::move(op));
    } else {
      op();
    }
  }
  void run_queued() {
    std::vector<std::function<void()>> ops;
    ops.swap(queue_);
    for (const auto& op : ops) op();
  }

  std::unique_ptr<Backend> cpu_;
  bool join_;
  bool capturing_ = false;
  std::vector<std::function<void()>> ops_;    // being recorded
  std::vector<std::function<void()>> queue_;  // deferred, not run yet
};

}  // namespace mistral::testing
