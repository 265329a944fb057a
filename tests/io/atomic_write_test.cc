// Saving never damages what is already on disk: the old file survives a failed or killed write,
// no temporary file is left behind by a failed one, and a reader that has the file mapped keeps
// seeing the old bytes after it is overwritten.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "io/weight_source.h"
#include "io_test_util.h"

namespace mistral {
namespace {

using testing::FailsWith;
using testing::TempDir;

std::vector<uint8_t> filled(size_t n, uint8_t value) { return std::vector<uint8_t>(n, value); }

TEST(AtomicWrite, SaveOverMappedFileLeavesMappingIntact) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const auto v1 = filled(4096 * 3, 0x11);
  ASSERT_TRUE(write_safetensors(path, {{"w", DType::kU8, {4096 * 3}, v1.data(), {}}}).ok());
  auto old_file = SafetensorsFile::open(path);
  ASSERT_TRUE(old_file.ok());
  const TensorInfo* old_w = (*old_file)->find("w");
  const uint8_t* old_data = (*old_file)->tensor_data(*old_w);

  const auto v2 = filled(100, 0x22);
  ASSERT_TRUE(write_safetensors(path, {{"w", DType::kU8, {100}, v2.data(), {}},
                                       {"v", DType::kU8, {100}, v2.data(), {}}})
                  .ok());
  // The old mapping still holds the old inode: same size, same bytes, no SIGBUS.
  EXPECT_EQ(old_w->num_bytes(), v1.size());
  EXPECT_EQ(std::memcmp(old_data, v1.data(), v1.size()), 0);

  auto new_file = SafetensorsFile::open(path);
  ASSERT_TRUE(new_file.ok());
  EXPECT_EQ((*new_file)->find("w")->num_bytes(), 100u);
  EXPECT_EQ((*new_file)->tensor_data(*(*new_file)->find("w"))[0], 0x22);
  EXPECT_EQ(testing::list_dir(dir.path()), std::vector<std::string>{"model.safetensors"});
}

TEST(AtomicWrite, CheckpointRewriteWhileWeightSourceIsOpen) {
  TempDir dir;
  const auto v1 = filled(64, 1), v2 = filled(64, 2);
  ASSERT_TRUE(
      write_checkpoint_tensors(dir.path(), {{"a", DType::kU8, {64}, v1.data(), {}}}, 1000).ok());
  auto source = WeightSource::open_hf_dir(dir.path());
  ASSERT_TRUE(source.ok());
  // Rewrite sharded, which also removes the model.safetensors the source has mapped.
  ASSERT_TRUE(write_checkpoint_tensors(
                  dir.path(),
                  {{"a", DType::kU8, {64}, v2.data(), {}}, {"b", DType::kU8, {64}, v2.data(), {}}},
                  64)
                  .ok());
  EXPECT_EQ(std::memcmp(source->find("a")->data, v1.data(), 64), 0);
  auto reopened = WeightSource::open_hf_dir(dir.path());
  ASSERT_TRUE(reopened.ok()) << reopened.status().message();
  EXPECT_EQ(reopened->find("a")->data[0], 2);
}

TEST(AtomicWrite, TemporaryFileIsNamedAfterTargetAndPid) {
  TempDir dir;
  std::vector<std::string> seen;
  auto fill = [&](uint8_t* dst) {
    seen = testing::list_dir(dir.path());
    std::memset(dst, 0, 4);
  };
  ASSERT_TRUE(
      write_safetensors(dir.file("m.safetensors"), {{"w", DType::kF32, {1}, nullptr, fill}}).ok());
  ASSERT_EQ(seen.size(), 1u);
  const std::string prefix = "m.safetensors.tmp." + std::to_string(::getpid()) + ".";
  EXPECT_EQ(seen[0].rfind(prefix, 0), 0u) << seen[0];
  EXPECT_EQ(testing::list_dir(dir.path()), std::vector<std::string>{"m.safetensors"});
}

TEST(AtomicWrite, SkipsTemporaryNamesTakenByOthers) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  std::string seen;
  std::vector<std::string> foreign;
  // Records the one entry that is neither the target nor a foreign file: our temporary file.
  auto fill = [&](uint8_t* dst) {
    for (const std::string& name : testing::list_dir(dir.path())) {
      if (name != "m.safetensors" &&
          std::find(foreign.begin(), foreign.end(), name) == foreign.end()) {
        seen = name;
      }
    }
    dst[0] = 1;
  };
  ASSERT_TRUE(write_safetensors(path, {{"w", DType::kU8, {1}, nullptr, fill}}).ok());
  // Occupy the next three names as an orphan of a killed writer with a recycled pid would.
  const std::string prefix = seen.substr(0, seen.rfind('.') + 1);
  const uint64_t counter = std::stoull(seen.substr(prefix.size()));
  for (uint64_t k = counter + 1; k <= counter + 3; ++k) {
    foreign.push_back(prefix + std::to_string(k));
    testing::write_file(dir.file(foreign.back()), "someone else's");
  }
  ASSERT_TRUE(write_safetensors(path, {{"w", DType::kU8, {1}, nullptr, fill}}).ok());
  EXPECT_EQ(seen, prefix + std::to_string(counter + 4));
  for (const std::string& name : foreign) {
    EXPECT_EQ(testing::read_file(dir.file(name)), "someone else's");
  }
}

TEST(AtomicWrite, ThrowingFillKeepsOldFileAndRemovesTemp) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const auto v1 = filled(32, 7);
  ASSERT_TRUE(write_safetensors(path, {{"w", DType::kU8, {32}, v1.data(), {}}}).ok());
  const std::string before = testing::read_file(path);

  const auto ok_bytes = filled(8 << 20, 9);  // more than the write buffer, so bytes hit the disk
  auto throws = [](uint8_t*) { throw std::runtime_error("generator exploded"); };
  Status status = write_safetensors(path, {{"first", DType::kU8, {8 << 20}, ok_bytes.data(), {}},
                                           {"second", DType::kF32, {4}, nullptr, throws}});
  EXPECT_TRUE(FailsWith(status, {path, "tensor \"second\"", "generator exploded"}));
  EXPECT_EQ(testing::read_file(path), before);
  EXPECT_EQ(testing::list_dir(dir.path()), std::vector<std::string>{"model.safetensors"});

  // The same through write_checkpoint_tensors: the old file stays, no index appears, and the
  // shard already written is removed again.
  Status sharded = write_checkpoint_tensors(dir.path(),
                                            {{"first", DType::kU8, {16}, ok_bytes.data(), {}},
                                             {"second", DType::kU8, {16}, nullptr, throws}},
                                            16);
  EXPECT_TRUE(FailsWith(sharded, {"model-00002-of-00002.safetensors", "tensor \"second\""}));
  EXPECT_EQ(testing::read_file(path), before);
  EXPECT_EQ(testing::list_dir(dir.path()), std::vector<std::string>{"model.safetensors"});
  auto source = WeightSource::open_hf_dir(dir.path());
  ASSERT_TRUE(source.ok());
  EXPECT_EQ(source->names(), std::vector<std::string>{"w"});
}

TEST(AtomicWrite, NonExistentDirectory) {
  TempDir dir;
  const std::string path = dir.file("no/such/dir/model.safetensors");
  const auto v = filled(4, 1);
  EXPECT_TRUE(FailsWith(write_safetensors(path, {{"w", DType::kU8, {4}, v.data(), {}}}),
                        {path, "No such file or directory"}));
  EXPECT_TRUE(FailsWith(write_file_atomic(path, "x"), {path, "No such file or directory"}));
  EXPECT_TRUE(testing::list_dir(dir.path()).empty());
}

TEST(AtomicWrite, DirectoryPathThroughAFile) {
  TempDir dir;
  testing::write_file(dir.file("file"), "x");
  EXPECT_TRUE(FailsWith(write_checkpoint_tensors(dir.file("file/ckpt"), {}, 10),
                        {dir.file("file/ckpt"), "cannot create directory"}));
  EXPECT_TRUE(FailsWith(write_file_atomic(dir.file("file/x.json"), "{}"), {"Not a directory"}));
}

TEST(AtomicWrite, ReadOnlyDirectory) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const auto v1 = filled(16, 3), v2 = filled(16, 4);
  ASSERT_TRUE(write_safetensors(path, {{"w", DType::kU8, {16}, v1.data(), {}}}).ok());
  const std::string before = testing::read_file(path);
  ASSERT_EQ(::chmod(dir.path().c_str(), 0555), 0);
  if (::access(dir.path().c_str(), W_OK) == 0) {
    ::chmod(dir.path().c_str(), 0755);
    GTEST_SKIP() << "permissions are not enforced for this user (root?)";
  }
  EXPECT_TRUE(FailsWith(write_safetensors(path, {{"w", DType::kU8, {16}, v2.data(), {}}}),
                        {path, "Permission denied"}));
  ::chmod(dir.path().c_str(), 0755);
  EXPECT_EQ(testing::read_file(path), before);
  EXPECT_EQ(testing::list_dir(dir.path()), std::vector<std::string>{"model.safetensors"});
}

// A process killed in the middle of a save (here it exits from inside `fill`) leaves the old
// checkpoint readable; only an orphaned temporary file remains.
TEST(AtomicWrite, KilledWriterLeavesOldFileIntact) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const auto v1 = filled(64, 5);
  ASSERT_TRUE(write_safetensors(path, {{"w", DType::kU8, {64}, v1.data(), {}}}).ok());
  const std::string before = testing::read_file(path);

  const auto big = filled(4 << 20, 6);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto die = [](uint8_t*) { ::_exit(0); };
    (void)write_safetensors(
        path, {{"w", DType::kU8, {4 << 20}, big.data(), {}}, {"x", DType::kU8, {4}, nullptr, die}});
    ::_exit(1);
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(child, &wstatus, 0), child);
  ASSERT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  EXPECT_EQ(testing::read_file(path), before);
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok()) << file.status().message();
  EXPECT_EQ((*file)->find("w")->num_bytes(), 64u);
  const auto names = testing::list_dir(dir.path());
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[1].rfind("model.safetensors.tmp." + std::to_string(child) + ".", 0), 0u);
}

}  // namespace
}  // namespace mistral
