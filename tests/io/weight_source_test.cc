// WeightSource over single files and sharded Hugging Face checkpoints: the writer's sharding
// round-trips through open_hf_dir, and every inconsistency between an index and its shards is
// reported with the index path and the tensor or shard at fault.
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors_writer.h"
#include "io/weight_source.h"
#include "io_test_util.h"

namespace mistral {
namespace {

using testing::FailsWith;
using testing::TempDir;

std::vector<uint8_t> bytes_for(const std::string& name, size_t n) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(name.size() * 17 + name[0] + i);
  return out;
}

// Writes each of `names` as a 4-byte U8 tensor into dir/file.
void write_shard(const TempDir& dir, const std::string& file,
                 const std::vector<std::string>& names) {
  std::vector<std::vector<uint8_t>> data;
  std::vector<TensorToWrite> tensors;
  data.reserve(names.size());
  for (const std::string& n : names) {
    data.push_back(bytes_for(n, 4));
    tensors.push_back({n, DType::kU8, {4}, data.back().data(), {}});
  }
  ASSERT_TRUE(write_safetensors(dir.file(file), tensors).ok());
}

// An index built as text, so that duplicate keys and odd values can be expressed.
std::string index_json(const std::vector<std::pair<std::string, std::string>>& map) {
  std::string out = "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {";
  for (size_t i = 0; i < map.size(); ++i) {
    out += (i ? ", \"" : "\"") + map[i].first + "\": " + map[i].second;
  }
  return out + "}}";
}

const std::string kIndex = "model.safetensors.index.json";

Status open_index_text(const TempDir& dir, const std::string& text) {
  testing::write_file(dir.file(kIndex), text);
  return WeightSource::open_index(dir.file(kIndex)).status();
}

TEST(WeightSource, ShardedWriteRoundTripsThroughOpenHfDir) {
  TempDir dir;
  const std::vector<std::pair<std::string, size_t>> spec = {{"a", 40}, {"b", 40}, {"huge", 100},
                                                            {"c", 8},  {"d", 8},  {"empty", 0}};
  std::vector<std::vector<uint8_t>> data;
  std::vector<TensorToWrite> tensors;
  data.reserve(spec.size());
  for (const auto& [name, n] : spec) {
    data.push_back(bytes_for(name, n));
    tensors.push_back({name, DType::kU8, {static_cast<int64_t>(n)}, data.back().data(), {}});
  }
  ASSERT_TRUE(write_checkpoint_tensors(dir.path(), tensors, 64, {{"format", "pt"}}).ok());
  // Greedy in order: [a] [b] [huge, alone and over the limit] [c, d, empty].
  EXPECT_EQ(testing::list_dir(dir.path()),
            (std::vector<std::string>{
                "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
                "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors", kIndex}));
  const std::string index = testing::read_file(dir.file(kIndex));
  EXPECT_NE(index.find("\"total_size\": 196"), std::string::npos) << index;
  EXPECT_LT(index.find("\"metadata\""), index.find("\"weight_map\""));
  EXPECT_NE(index.find("\"huge\": \"model-00003-of-00004.safetensors\""), std::string::npos);

  auto source = WeightSource::open_hf_dir(dir.path());
  ASSERT_TRUE(source.ok()) << source.status().message();
  EXPECT_EQ(source->description(), dir.file(kIndex));
  EXPECT_EQ(source->names(), (std::vector<std::string>{"a", "b", "c", "d", "empty", "huge"}));
  for (size_t i = 0; i < spec.size(); ++i) {
    const TensorView* view = source->find(spec[i].first);
    ASSERT_NE(view, nullptr) << spec[i].first;
    EXPECT_EQ(view->info->num_bytes(), spec[i].second);
    if (spec[i].second > 0) {
      EXPECT_EQ(std::memcmp(view->data, data[i].data(), spec[i].second), 0) << spec[i].first;
    }
  }
  EXPECT_EQ(*source->find("c")->file, dir.file("model-00004-of-00004.safetensors"));
  // One SafetensorsFile per shard: views into the same shard share its path string.
  EXPECT_EQ(source->find("c")->file, source->find("d")->file);
  EXPECT_EQ(source->find("zzz"), nullptr);
}

TEST(WeightSource, SingleFileWhenEverythingFits) {
  TempDir dir;
  const auto a = bytes_for("a", 16);
  ASSERT_TRUE(
      write_checkpoint_tensors(dir.path(), {{"a", DType::kF32, {4}, a.data(), {}}}, 16).ok());
  EXPECT_EQ(testing::list_dir(dir.path()), std::vector<std::string>{"model.safetensors"});
  auto source = WeightSource::open_hf_dir(dir.path());
  ASSERT_TRUE(source.ok()) << source.status().message();
  EXPECT_EQ(source->description(), dir.file("model.safetensors"));
  EXPECT_EQ(std::memcmp(source->find("a")->data, a.data(), 16), 0);
}

TEST(WeightSource, SwitchingLayoutsRemovesStaleFilesOnly) {
  TempDir dir;
  const auto buf = bytes_for("x", 64);
  std::vector<TensorToWrite> tensors;
  for (const char* n : {"t0", "t1", "t2"}) tensors.push_back({n, DType::kU8, {32}, buf.data(), {}});
  // Files a checkpoint directory also holds, which no rewrite of it may touch.
  testing::write_file(dir.file("consolidated.safetensors"), "mistral native");
  testing::write_file(dir.file("model-00009-of-00009.safetensors"), "not in any index");
  const std::vector<std::string> untouched = {"consolidated.safetensors",
                                              "model-00009-of-00009.safetensors"};
  auto expect_files = [&](std::vector<std::string> names) {
    names.insert(names.end(), untouched.begin(), untouched.end());
    std::sort(names.begin(), names.end());
    EXPECT_EQ(testing::list_dir(dir.path()), names);
  };

  ASSERT_TRUE(write_checkpoint_tensors(dir.path(), tensors, 32).ok());
  expect_files({"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                "model-00003-of-00003.safetensors", kIndex});
  ASSERT_TRUE(write_checkpoint_tensors(dir.path(), tensors, 64).ok());
  expect_files({"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", kIndex});
  ASSERT_TRUE(write_checkpoint_tensors(dir.path(), tensors, 1000).ok());
  expect_files({"model.safetensors"});
  ASSERT_TRUE(write_checkpoint_tensors(dir.path(), tensors, 64).ok());
  expect_files({"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", kIndex});
  EXPECT_EQ(testing::read_file(dir.file("consolidated.safetensors")), "mistral native");
  EXPECT_TRUE(WeightSource::open_hf_dir(dir.path()).ok());
}

TEST(WeightSource, WriterCreatesDirectory) {
  TempDir dir;
  const std::string nested = dir.file("out/ckpt");
  ASSERT_TRUE(write_checkpoint_tensors(nested, {}, 100).ok());
  EXPECT_TRUE(WeightSource::open_hf_dir(nested).ok());
}

TEST(WeightSource, OpenHfDirWithoutCheckpointListsWhatItLookedFor) {
  TempDir dir;
  write_shard(dir, "model-00001-of-00001.safetensors", {"a"});
  EXPECT_TRUE(FailsWith(WeightSource::open_hf_dir(dir.path()).status(),
                        {dir.path(), "model.safetensors.index.json", "model.safetensors"}));
  EXPECT_TRUE(FailsWith(WeightSource::open_hf_dir(dir.file("missing")).status(),
                        {dir.file("missing"), "not a directory"}));
}

TEST(WeightSource, OpenFileErrorsNameThePath) {
  TempDir dir;
  EXPECT_TRUE(FailsWith(WeightSource::open_file(dir.file("x.safetensors")).status(),
                        {dir.file("x.safetensors"), "No such file"}));
  write_shard(dir, "consolidated.safetensors", {"b", "a"});
  auto source = WeightSource::open_file(dir.file("consolidated.safetensors"));
  ASSERT_TRUE(source.ok());
  EXPECT_EQ(source->names(), (std::vector<std::string>{"a", "b"}));
}

// --- Index validation ---

class IndexErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    write_shard(dir_, "s1.safetensors", {"a", "b"});
    write_shard(dir_, "s2.safetensors", {"c"});
  }
  std::string index_path() const { return dir_.file(kIndex); }
  TempDir dir_;
};

TEST_F(IndexErrors, ValidIndexOpensAndSharesShards) {
  auto status = open_index_text(dir_, index_json({{"a", "\"s1.safetensors\""},
                                                  {"b", "\"./s1.safetensors\""},
                                                  {"c", "\"s2.safetensors\""}}));
  ASSERT_TRUE(status.ok()) << status.message();
  auto source = WeightSource::open_index(index_path());
  ASSERT_TRUE(source.ok());
  EXPECT_EQ(source->find("a")->file, source->find("b")->file);
}

TEST_F(IndexErrors, NotJson) {
  EXPECT_TRUE(FailsWith(open_index_text(dir_, "weight_map: a"), {index_path(), "invalid JSON"}));
  EXPECT_TRUE(FailsWith(open_index_text(dir_, ""), {index_path(), "invalid JSON"}));
  EXPECT_TRUE(FailsWith(open_index_text(dir_, "[]"), {index_path(), "expected a JSON object"}));
}

TEST_F(IndexErrors, MissingWeightMap) {
  EXPECT_TRUE(FailsWith(open_index_text(dir_, "{\"metadata\": {}}"),
                        {index_path(), "missing field 'weight_map'"}));
}

TEST_F(IndexErrors, WeightMapNotObjectOfStrings) {
  EXPECT_TRUE(FailsWith(open_index_text(dir_, "{\"weight_map\": [\"s1.safetensors\"]}"),
                        {index_path(), "'weight_map'", "an array"}));
  EXPECT_TRUE(FailsWith(open_index_text(dir_, index_json({{"a", "1"}})),
                        {index_path(), "tensor \"a\"", "an integer"}));
  EXPECT_TRUE(FailsWith(open_index_text(dir_, "{\"weight_map\": {}}"), {index_path(), "empty"}));
}

TEST_F(IndexErrors, DuplicateTensorKey) {
  auto text = index_json({{"a", "\"s1.safetensors\""}, {"a", "\"s2.safetensors\""}});
  EXPECT_TRUE(FailsWith(open_index_text(dir_, text),
                        {index_path(), "duplicate key \"a\"", "\"weight_map\""}));
}

TEST_F(IndexErrors, UnsafeShardPaths) {
  struct Case {
    std::string path, words;
  };
  for (const Case& c : std::vector<Case>{{"\"../s1.safetensors\"", "\"..\""},
                                         {"\"sub/../../s1.safetensors\"", "\"..\""},
                                         {"\"/etc/passwd\"", "absolute"},
                                         {"\"\"", "empty"},
                                         {"\".\"", "directory"},
                                         {"\"s1.safetensors\\u0000x\"", "NUL"}}) {
    EXPECT_TRUE(FailsWith(open_index_text(dir_, index_json({{"a", c.path}})),
                          {index_path(), "tensor \"a\"", c.words}))
        << c.path;
  }
}

TEST_F(IndexErrors, MissingShard) {
  auto text = index_json({{"a", "\"s1.safetensors\""}, {"z", "\"gone.safetensors\""}});
  EXPECT_TRUE(FailsWith(open_index_text(dir_, text), {index_path(), "shard \"gone.safetensors\"",
                                                      "tensor \"z\"", "No such file"}));
}

TEST_F(IndexErrors, TensorAbsentFromNamedShard) {
  auto text = index_json(
      {{"a", "\"s1.safetensors\""}, {"b", "\"s1.safetensors\""}, {"c", "\"s1.safetensors\""}});
  EXPECT_TRUE(FailsWith(open_index_text(dir_, text),
                        {index_path(), "tensor \"c\"", "\"s1.safetensors\"", "does not contain"}));
  auto unknown = index_json(
      {{"a", "\"s1.safetensors\""}, {"b", "\"s1.safetensors\""}, {"x", "\"s1.safetensors\""}});
  EXPECT_TRUE(FailsWith(open_index_text(dir_, unknown),
                        {index_path(), "tensor \"x\"", "no listed shard has it"}));
}

TEST_F(IndexErrors, TensorInTwoShards) {
  write_shard(dir_, "s3.safetensors", {"c", "d"});
  auto text = index_json({{"a", "\"s1.safetensors\""},
                          {"b", "\"s1.safetensors\""},
                          {"c", "\"s2.safetensors\""},
                          {"d", "\"s3.safetensors\""}});
  EXPECT_TRUE(FailsWith(open_index_text(dir_, text), {index_path(), "tensor \"c\"",
                                                      "\"s2.safetensors\"", "\"s3.safetensors\""}));
}

TEST_F(IndexErrors, TensorInShardButAbsentFromMap) {
  auto text = index_json({{"a", "\"s1.safetensors\""}, {"c", "\"s2.safetensors\""}});
  EXPECT_TRUE(
      FailsWith(open_index_text(dir_, text),
                {index_path(), "tensor \"b\"", "\"s1.safetensors\"", "absent from weight_map"}));
}

TEST_F(IndexErrors, CorruptShardNamesIndexAndShard) {
  testing::write_file(dir_.file("s2.safetensors"), "garbage!garbage!");
  auto text = index_json(
      {{"a", "\"s1.safetensors\""}, {"b", "\"s1.safetensors\""}, {"c", "\"s2.safetensors\""}});
  EXPECT_TRUE(FailsWith(open_index_text(dir_, text),
                        {index_path(), "shard \"s2.safetensors\"", dir_.file("s2.safetensors")}));
}

}  // namespace
}  // namespace mistral

namespace mistral::testing {
namespace {

TEST(WeightSourcePickle, PytorchBinIsNeverLoadedAndIsPointedOut) {
  TempDir dir;
  std::ofstream(dir.file("pytorch_model.bin")) << "\x80\x02}q\x00.";  // a pickle
  auto source = WeightSource::open_hf_dir(dir.path());
  ASSERT_FALSE(source.ok());
  EXPECT_NE(source.status().message().find("pytorch_model.bin, a pickle file"), std::string::npos)
      << source.status().message();
}

}  // namespace
}  // namespace mistral::testing
