// write_safetensors then SafetensorsFile::open: every dtype, zero-size tensors, metadata, streamed
// (`fill`) tensors, and the exact bytes of the reference implementation's serializer tests.
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "io_test_util.h"

namespace mistral {
namespace {

using testing::FailsWith;
using testing::le64;

constexpr DType kAllDTypes[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kF64, DType::kI64,
                                DType::kI32, DType::kI16, DType::kI8,   DType::kU8,  DType::kBool};

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(seed + i * 31);
  return out;
}

std::vector<uint8_t> f32_bytes(std::initializer_list<float> values) {
  std::vector<uint8_t> out(values.size() * 4);
  std::memcpy(out.data(), values.begin(), out.size());
  return out;
}

TEST(SafetensorsRoundTrip, EveryDtypeWithZeroSizeTensorsAndMetadata) {
  testing::TempDir dir;
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<TensorToWrite> tensors;
  for (DType t : kAllDTypes) {
    const std::string name(dtype_name(t));
    buffers.push_back(pattern(3 * 5 * dtype_size(t), static_cast<uint8_t>(tensors.size())));
    tensors.push_back({"full." + name, t, {3, 5}, buffers.back().data(), {}});
    tensors.push_back({"empty." + name, t, {0, 4}, nullptr, {}});
    buffers.push_back(pattern(dtype_size(t), 7));
    tensors.push_back({"scalar." + name, t, {}, buffers.back().data(), {}});
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                       {"note", "\xc3\xa9t\xc3\xa9"}};
  const std::string path = dir.file("all.safetensors");
  ASSERT_TRUE(write_safetensors(path, tensors, metadata).ok());

  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok()) << file.status().message();
  EXPECT_EQ((*file)->metadata(), metadata);
  ASSERT_EQ((*file)->tensors().size(), tensors.size());
  for (const TensorToWrite& t : tensors) {
    const TensorInfo* info = (*file)->find(t.name);
    ASSERT_NE(info, nullptr) << t.name;
    EXPECT_EQ(info->dtype, t.dtype) << t.name;
    EXPECT_EQ(info->shape, t.shape) << t.name;
    ASSERT_EQ(info->num_bytes(), t.num_bytes()) << t.name;
    if (t.num_bytes() > 0) {
      EXPECT_EQ(std::memcmp((*file)->tensor_data(*info), t.data, t.num_bytes()), 0) << t.name;
    }
  }
  // The header is padded so that the data section, hence the first tensor, is 8-byte aligned.
  const TensorInfo& first = (*file)->tensors().front();
  EXPECT_EQ(first.data_begin, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*file)->tensor_data(first)) % 8, 0u);
}

TEST(SafetensorsRoundTrip, HeaderIsOrderedPaddedAndContiguous) {
  testing::TempDir dir;
  const auto z = pattern(12, 1), a = pattern(6, 2);
  const std::vector<TensorToWrite> tensors = {{"z", DType::kF32, {3}, z.data(), {}},
                                              {"a", DType::kI16, {3}, a.data(), {}}};
  const std::string path = dir.file("order.safetensors");
  ASSERT_TRUE(write_safetensors(path, tensors, {{"k", "v"}}).ok());
  const std::string bytes = testing::read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + 18);
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.rfind("{\"__metadata__\":{\"k\":\"v\"},\"z\":", 0), 0u) << header;
  EXPECT_LT(header.find("\"z\""), header.find("\"a\""));
  EXPECT_NE(header.find("\"data_offsets\":[0,12]"), std::string::npos);
  EXPECT_NE(header.find("\"data_offsets\":[12,18]"), std::string::npos);
  EXPECT_EQ(header.find_last_not_of(' '), header.find_last_of('}'));
  EXPECT_EQ(bytes.substr(8 + n, 12), std::string(z.begin(), z.end()));
}

// The expected bytes are those of test_serialization, test_empty and
// test_serialization_forced_alignement in huggingface/safetensors (safetensors/src/tensor.rs).
TEST(SafetensorsRoundTrip, MatchesReferenceSerializerBytes) {
  testing::TempDir dir;
  const auto data = f32_bytes({0, 1, 2, 3, 4, 5});
  const std::string data_str(data.begin(), data.end());

  ASSERT_TRUE(
      write_safetensors(dir.file("a"), {{"attn.0", DType::kF32, {1, 2, 3}, data.data(), {}}}).ok());
  EXPECT_EQ(testing::read_file(dir.file("a")),
            le64(64) +
                "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}" +
                data_str);

  ASSERT_TRUE(
      write_safetensors(dir.file("b"), {{"attn0", DType::kF32, {1, 1, 2, 3}, data.data(), {}}})
          .ok());
  EXPECT_EQ(testing::read_file(dir.file("b")),
            le64(72) +
                "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}" +
                std::string(7, ' ') + data_str);

  ASSERT_TRUE(write_safetensors(dir.file("c"), {}).ok());
  EXPECT_EQ(testing::read_file(dir.file("c")), le64(8) + "{}" + std::string(6, ' '));

  ASSERT_TRUE(write_safetensors(dir.file("d"), {}, {{"framework", "pt"}}).ok());
  EXPECT_EQ(testing::read_file(dir.file("d")),
            le64(40) + "{\"__metadata__\":{\"framework\":\"pt\"}}" + std::string(5, ' '));
  for (const char* name : {"a", "b", "c", "d"}) {
    EXPECT_TRUE(SafetensorsFile::open(dir.file(name)).ok()) << name;
  }
}

TEST(SafetensorsRoundTrip, FillIsStreamedOncePerTensor) {
  testing::TempDir dir;
  int calls = 0;
  auto make_fill = [&calls](uint8_t seed, size_t n) {
    return [&calls, seed, n](uint8_t* dst) {
      ++calls;
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<uint8_t>(seed ^ i);
    };
  };
  const std::vector<TensorToWrite> tensors = {
      {"big", DType::kBF16, {1024, 1100}, nullptr, make_fill(3, 1024 * 1100 * 2)},
      {"zero", DType::kF32, {0}, nullptr, make_fill(9, 0)},
      {"small", DType::kU8, {5}, nullptr, make_fill(5, 5)}};
  ASSERT_TRUE(write_safetensors(dir.file("f.safetensors"), tensors).ok());
  EXPECT_EQ(calls, 2);  // nothing to fill in a zero-size tensor
  auto file = SafetensorsFile::open(dir.file("f.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status().message();
  const TensorInfo* big = (*file)->find("big");
  ASSERT_NE(big, nullptr);
  const uint8_t* p = (*file)->tensor_data(*big);
  for (size_t i = 0; i < big->num_bytes(); i += 4099) ASSERT_EQ(p[i], static_cast<uint8_t>(3 ^ i));
  EXPECT_EQ((*file)->tensor_data(*(*file)->find("small"))[4], 5 ^ 4);
}

TEST(SafetensorsWriter, RejectsBadTensorLists) {
  testing::TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  const uint8_t bytes[8] = {};
  auto noop = [](uint8_t*) {};
  struct Case {
    std::vector<TensorToWrite> tensors;
    std::vector<std::string> words;
  };
  const std::vector<Case> cases = {
      {{{"w", DType::kU8, {2}, bytes, {}}, {"w", DType::kU8, {2}, bytes, {}}},
       {"tensor \"w\"", "twice"}},
      {{{"neg", DType::kU8, {2, -1}, bytes, {}}}, {"tensor \"neg\"", "negative dimension -1"}},
      {{{"both", DType::kU8, {2}, bytes, noop}}, {"tensor \"both\"", "both data and fill"}},
      {{{"none", DType::kU8, {2}, nullptr, {}}}, {"tensor \"none\"", "neither data nor fill"}},
      {{{"__metadata__", DType::kU8, {2}, bytes, {}}}, {"\"__metadata__\"", "reserved"}},
      {{{"bad\xff", DType::kU8, {2}, bytes, {}}}, {"not valid UTF-8"}},
      {{{"huge", DType::kF64, {int64_t{1} << 62}, bytes, {}}}, {"tensor \"huge\"", "overflows"}},
  };
  for (const Case& c : cases) {
    Status status = write_safetensors(path, c.tensors);
    EXPECT_FALSE(status.ok());
    EXPECT_NE(status.message().find(path), std::string::npos) << status.message();
    for (const std::string& w : c.words) {
      EXPECT_NE(status.message().find(w), std::string::npos) << status.message();
    }
  }
  EXPECT_TRUE(FailsWith(write_safetensors(path, {}, {{"k", "\xc0"}}), {path, "\"k\"", "UTF-8"}));
  EXPECT_TRUE(testing::list_dir(dir.path()).empty());
}

TEST(SafetensorsWriter, WriteFileAtomic) {
  testing::TempDir dir;
  const std::string path = dir.file("config.json");
  ASSERT_TRUE(write_file_atomic(path, "{\"a\": 1}\n").ok());
  ASSERT_TRUE(write_file_atomic(path, "{}").ok());
  EXPECT_EQ(testing::read_file(path), "{}");
  EXPECT_EQ(testing::list_dir(dir.path()), std::vector<std::string>{"config.json"});
}

}  // namespace
}  // namespace mistral
