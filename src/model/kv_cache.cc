#include "model/kv_cache.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>

#include "core/check.h"

namespace mistral {

uint64_t available_memory_bytes() {
  // MemAvailable counts reclaimable page cache (e.g. the memory-mapped weights), which
  // _SC_AVPHYS_PAGES (MemFree) does not.
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  const long pages = sysconf(_SC_AVPHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_size <= 0) return UINT64_MAX;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size);
}

std::optional<DType> parse_kv_cache_dtype(std::string_view name) {
  if (name == "int8" || name == "i8" || name == "I8") return DType::kI8;
  return parse_float_dtype(name);
}

bool is_kv_cache_dtype(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16 ||
         dtype == DType::kI8;
}

std::string_view kv_cache_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kI8:
      return "int8";
    default:
      return "?";
  }
}

uint64_t KvCache::bytes_per_position(const ModelConfig& config, DType dtype) {
  const uint64_t vectors = 2 * static_cast<uint64_t>(config.num_hidden_layers) *
                           static_cast<uint64_t>(config.num_key_value_heads);  // keys and values
  const uint64_t scale_bytes = dtype == DType::kI8 ? sizeof(float) : 0;
  return vectors * (static_cast<uint64_t>(config.head_dim) * dtype_size(dtype) + scale_bytes);
}

Result<KvCache> KvCache::create(const ModelConfig& config, int64_t batch,
                                int64_t max_sequence_length, DType dtype,
                                const KvCacheLayout& layout) {
  static const std::unique_ptr<Backend> host = make_cpu_backend();
  return create(config, batch, max_sequence_length, dtype, *host, layout);
}

Result<KvCache> KvCache::create(const ModelConfig& config, int64_t batch,
                                int64_t max_sequence_length, DType dtype, Backend& backend,
                                const KvCacheLayout& layout) {
  if (!is_kv_cache_dtype(dtype)) {
    return error("kv cache: storage type " + std::string(dtype_name(dtype)) +
                 " is not one of f32, bf16, f16, int8");
  }
  if (!backend.supports_kv_cache_dtype(dtype)) {
    return error("kv cache: the " + backend.name() + " backend does not store a " +
                 std::string(kv_cache_dtype_name(dtype)) + " cache (use " +
                 std::string(kv_cache_dtype_name(backend.default_kv_cache_dtype())) + ")");
  }
  if (batch <= 0) return error("kv cache: batch must be positive, got " + std::to_string(batch));
  if (max_sequence_length <= 0) {
    return error("kv cache: max sequence length must be positive, got " +
                 std::to_string(max_sequence_length));
  }
  if (max_sequence_length > config.max_position_embeddings) {
    return error("kv cache: sequence length " + std::to_string(max_sequence_length) +
                 " exceeds max_position_embeddings (" +
                 std::to_string(config.max_position_embeddings) + ")");
  }
  static std::atomic<uint64_t> next_id{1};
  KvCache c;
  c.backend_ = &backend;
  c.id_ = next_id++;
  c.dtype_ = dtype;
  c.batch_ = batch;
  c.kv_heads_ = config.num_key_value_heads;
  c.head_dim_ = config.head_dim;
  c.capacity_ = max_sequence_length;
  if (config.sliding_window && *config.sliding_window < max_sequence_length) {
    c.capacity_ = *config.sliding_window;
    c.rolling_ = true;
  }
  if (layout.block_size < 0 || layout.block_size > INT32_MAX) {
    return error("kv cache: block_size must be in [1, " + std::to_string(INT32_MAX) +
                 "] (or 0 for the default), got " + std::to_string(layout.block_size));
  }
  if (layout.num_blocks < 0) {
    return error("kv cache: num_blocks must be positive (or 0 for the default), got " +
                 std::to_string(layout.num_blocks));
  }
  c.block_size_ =
      layout.block_size != 0 ? layout.block_size : std::min(kDefaultKvBlockSize, c.capacity_);
  c.blocks_per_row_ = (c.capacity_ + c.block_size_ - 1) / c.block_size_;
  // In floating point: batch and length come from requests and may be absurd.
  const double needed_blocks = static_cast<double>(batch) * static_cast<double>(c.blocks_per_row_);
  if (layout.num_blocks != 0 && static_cast<double>(layout.num_blocks) < needed_blocks) {
    return error("kv cache: num_blocks " + std::to_string(layout.num_blocks) +
                 " is less than the " + std::to_string(static_cast<uint64_t>(needed_blocks)) +
                 " blocks a batch of " + std::to_string(batch) + " needs (" +
                 std::to_string(c.blocks_per_row_) + " blocks of block_size " +
                 std::to_string(c.block_size_) + " per row of " + std::to_string(c.capacity_) +
                 " positions)");
  }
  const double blocks =
      layout.num_blocks != 0 ? static_cast<double>(layout.num_blocks) : needed_blocks;
  const double bytes = static_cast<double>(bytes_per_position(config, dtype)) * blocks *
                       static_cast<double>(c.block_size_);
  const uint64_t available = backend.name() == "cpu" ? available_memory_bytes() : UINT64_MAX;
  if (bytes > static_cast<double>(available) || bytes > 0x1p62) {
    return error("kv cache: needs " + std::to_string(static_cast<uint64_t>(bytes / (1 << 20))) +
                 " MiB (" + std::string(kv_cache_dtype_name(dtype)) + ") for batch " +
                 std::to_string(batch) + " x " + std::to_string(c.capacity_) + " positions (" +
                 std::to_string(static_cast<uint64_t>(blocks)) + " blocks of " +
                 std::to_string(c.block_size_) + "), but only " + std::to_string(available >> 20) +
                 " MiB of memory are available");
  }
  if (blocks > static_cast<double>(INT32_MAX)) {  // block ids are int32
    return error("kv cache: num_blocks " + std::to_string(static_cast<uint64_t>(blocks)) +
                 " exceeds the limit of " + std::to_string(INT32_MAX) +
                 " (use a larger block_size)");
  }
  c.num_blocks_ = static_cast<int64_t>(blocks);
  const size_t vectors = static_cast<size_t>(c.num_blocks_ * c.block_size_ * c.kv_heads_);
  const size_t data_bytes = vectors * static_cast<size_t>(c.head_dim_) * dtype_size(dtype);
  c.layers_.resize(config.num_hidden_layers);
  for (size_t l = 0; l < c.layers_.size(); ++l) {
    Layer& layer = c.layers_[l];
    const std::string what = "kv cache layer " + std::to_string(l);
    MISTRAL_ASSIGN_OR_RETURN(layer.keys, backend.allocate(data_bytes, what + " keys"));
    MISTRAL_ASSIGN_OR_RETURN(layer.values, backend.allocate(data_bytes, what + " values"));
    if (dtype == DType::kI8) {
      MISTRAL_ASSIGN_OR_RETURN(layer.key_scales,
                               backend.allocate(vectors * sizeof(float), what + " key scales"));
      MISTRAL_ASSIGN_OR_RETURN(layer.value_scales,
                               backend.allocate(vectors * sizeof(float), what + " value scales"));
    }
  }
  const std::vector<int64_t> empty_slots(c.capacity_, -1);
  const std::vector<uint8_t> invalid(batch * c.capacity_, 0);
  MISTRAL_ASSIGN_OR_RETURN(
      c.slot_seq_index_, backend.allocate(empty_slots.size() * sizeof(int64_t), "kv cache slots"));
  MISTRAL_ASSIGN_OR_RETURN(c.slot_valid_, backend.allocate(invalid.size(), "kv cache slot mask"));
  backend.to_device(c.slot_seq_index_.data, empty_slots.data(),
                    empty_slots.size() * sizeof(int64_t));
  backend.to_device(c.slot_valid_.data, invalid.data(), invalid.size());
  c.row_tokens_.assign(batch, 0);
  // The default tables: row b gets blocks b * blocks_per_row, ... in order.
  c.block_table_host_.resize(static_cast<size_t>(batch * c.blocks_per_row_));
  for (size_t i = 0; i < c.block_table_host_.size(); ++i) {
    c.block_table_host_[i] = static_cast<int32_t>(i);
  }
  MISTRAL_ASSIGN_OR_RETURN(
      c.block_table_,
      backend.allocate(c.block_table_host_.size() * sizeof(int32_t), "kv cache block table"));
  backend.to_device(c.block_table_.data, c.block_table_host_.data(),
                    c.block_table_host_.size() * sizeof(int32_t));
  return c;
}

std::vector<int32_t> KvCache::row_block_table(int64_t row) const {
  MISTRAL_CHECK(row >= 0 && row < batch_) << "row " << row << " of " << batch_;
  const auto begin = block_table_host_.begin() + row * blocks_per_row_;
  return std::vector<int32_t>(begin, begin + blocks_per_row_);
}

Status KvCache::set_block_table(int64_t row, std::span<const int32_t> blocks) {
  if (row < 0 || row >= batch_) {
    return error("kv cache: set_block_table: row " + std::to_string(row) + " is not in [0, " +
                 std::to_string(batch_) + ")");
  }
  if (static_cast<int64_t>(blocks.size()) != blocks_per_row_) {
    return error("kv cache: the block table of row " + std::to_string(row) + " has " +
                 std::to_string(blocks.size()) + " blocks, but a row has blocks_per_row = " +
                 std::to_string(blocks_per_row_) + " (capacity " + std::to_string(capacity_) +
                 " / block_size " + std::to_string(block_size_) + ", rounded up)");
  }
  std::vector<int32_t> table = block_table_host_;
  std::copy(blocks.begin(), blocks.end(), table.begin() + row * blocks_per_row_);
  return install_block_table(std::move(table), row, row + 1);
}

Status KvCache::set_block_tables(std::span<const int32_t> table) {
  if (static_cast<int64_t>(table.size()) != batch_ * blocks_per_row_) {
    return error("kv cache: the block tables have " + std::to_string(table.size()) +
                 " entries, but batch " + std::to_string(batch_) + " x blocks_per_row " +
                 std::to_string(blocks_per_row_) + " = " +
                 std::to_string(batch_ * blocks_per_row_) + " are needed");
  }
  return install_block_table(std::vector<int32_t>(table.begin(), table.end()), 0, batch_);
}

Status KvCache::install_block_table(std::vector<int32_t> table, int64_t first_row,
                                    int64_t end_row) {
  // "row R (logical block L)" of table entry i.
  auto entry = [&](int64_t i) {
    return "row " + std::to_string(i / blocks_per_row_) + " (logical block " +
           std::to_string(i % blocks_per_row_) + ")";
  };
  std::vector<int64_t> user(static_cast<size_t>(num_blocks_), -1);  // entry using each block
  for (int64_t i = 0; i < static_cast<int64_t>(table.size()); ++i) {
    const int32_t id = table[i];
    if (id < 0 || id >= num_blocks_) {
      return error("kv cache: block table of " + entry(i) + ": block " + std::to_string(id) +
                   " is not in [0, num_blocks = " + std::to_string(num_blocks_) + ")");
    }
    if (user[id] >= 0) {
      return error("kv cache: block table of " + entry(i) + ": block " + std::to_string(id) +
                   " is already used by " + entry(user[id]));
    }
    user[id] = i;
  }
  block_table_host_ = std::move(table);
  const size_t begin = static_cast<size_t>(first_row * blocks_per_row_);
  const size_t count = static_cast<size_t>((end_row - first_row) * blocks_per_row_);
  backend_->to_device(block_table_.as<int32_t>() + begin, block_table_host_.data() + begin,
                      count * sizeof(int32_t));
  return Status();
}

Status KvCache::check_room(int64_t new_tokens) const {
  if (rolling_ || length_ + new_tokens <= capacity_) return Status();
  return error("kv cache full: " + std::to_string(length_) + " + " + std::to_string(new_tokens) +
               " tokens exceed its capacity of " + std::to_string(capacity_));
}

void KvCache::store_layer(int64_t layer, const void* k, const void* v, int64_t new_tokens,
                          const int64_t* first_seq_index_device) {
  backend_->store_kv(write_args(layer, k, v, new_tokens, first_seq_index_device));
}

KvWriteArgs KvCache::write_args(int64_t layer, const void* k, const void* v, int64_t new_tokens,
                                const int64_t* first_seq_index_device) const {
  const Layer& l = layers_[layer];
  KvWriteArgs a;
  a.batch = batch_;
  a.new_tokens = new_tokens;
  a.num_kv_heads = kv_heads_;
  a.head_dim = head_dim_;
  a.capacity = capacity_;
  a.blocks = block_layout();
  a.first_seq_index = length_;
  a.first_seq_index_device = first_seq_index_device;
  a.k = k;
  a.v = v;
  a.cache_dtype = dtype_;
  a.k_cache = l.keys.data;
  a.v_cache = l.values.data;
  a.k_scale = l.key_scales.as<float>();
  a.v_scale = l.value_scales.as<float>();
  return a;
}

void KvCache::advance(const uint8_t* valid, int64_t new_tokens, const uint8_t* valid_device,
                      const int64_t* first_seq_index_device) {
  if (valid_device == nullptr) valid_device = stage_valid(valid, new_tokens);
  backend_->record_kv_slots(batch_, new_tokens, length_, first_seq_index_device, capacity_,
                            valid_device, slot_seq_index_.as<int64_t>(), slot_valid_.as<uint8_t>());
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t t = 0; t < new_tokens; ++t) row_tokens_[b] += valid[b * new_tokens + t] ? 1 : 0;
  }
  length_ += new_tokens;
  retracts_ = 0;
}

const uint8_t* KvCache::stage_valid(const uint8_t* valid, int64_t new_tokens) {
  const size_t n = static_cast<size_t>(batch_ * new_tokens);
  if (staged_valid_.bytes < n) {
    Result<Buffer> staged = backend_->allocate(n, "kv cache mask staging");
    MISTRAL_CHECK(staged.ok()) << staged.status().message();
    staged_valid_ = std::move(staged).value();
  }
  backend_->to_device(staged_valid_.data, valid, n);
  return staged_valid_.as<uint8_t>();
}

Status KvCache::retract(std::span<const uint8_t> valid) {
  if (static_cast<int64_t>(valid.size()) != batch_) {
    return error("kv cache retract: the mask has " + std::to_string(valid.size()) +
                 " entries for a batch of " + std::to_string(batch_));
  }
  if (retractable_steps() == 0) {
    return error(length_ == 0
                     ? std::string("kv cache retract: the cache is empty")
                     : "kv cache retract: a full rolling cache (window " +
                           std::to_string(capacity_) + ") takes back only the last step, once");
  }
  for (int64_t b = 0; b < batch_; ++b) {
    if (valid[b] > 1 || row_tokens_[b] < valid[b]) {
      return error("kv cache retract: valid[" + std::to_string(b) + "] does not fit the row's " +
                   std::to_string(row_tokens_[b]) + " tokens");
    }
  }
  --length_;
  ++retracts_;
  for (int64_t b = 0; b < batch_; ++b) row_tokens_[b] -= valid[b];
  const std::vector<uint8_t> padding(batch_, 0);
  backend_->record_kv_slots(batch_, 1, length_, nullptr, capacity_, stage_valid(padding.data(), 1),
                            slot_seq_index_.as<int64_t>(), slot_valid_.as<uint8_t>());
  return Status();
}

int64_t KvCache::retractable_steps() const {
  // The slots of the steps taken back held positions one window before them; those of the steps
  // before the last are visible again from the shorter length once it is past the window.
  if (!rolling_ || length_ + retracts_ <= capacity_) return length_;
  return retracts_ == 0 ? 1 : 0;
}

uint64_t KvCache::bytes() const {
  uint64_t total = 0;
  for (const Layer& l : layers_) {
    total += l.keys.bytes + l.values.bytes + l.key_scales.bytes + l.value_scales.bytes;
  }
  return total;
}

}  // namespace mistral
