// Rewrites a checkpoint's model.safetensors with its tensor list after `edit`, for tests that
// craft broken checkpoints from good ones. The old file stays mapped while the new one is
// written, so the views `edit` sees remain valid.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"

namespace mistral::testing {

inline void rewrite_tensors(const std::string& dir,
                            const std::function<void(std::vector<TensorToWrite>&)>& edit) {
  const std::string path = dir + "/model.safetensors";
  Result<std::shared_ptr<SafetensorsFile>> file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok()) << file.status().message();
  std::vector<TensorToWrite> tensors;
  for (const TensorInfo& info : (*file)->tensors()) {
    TensorToWrite t;
    t.name = info.name;
    t.dtype = info.dtype;
    t.shape = info.shape;
    t.data = (*file)->tensor_data(info);
    tensors.push_back(std::move(t));
  }
  edit(tensors);
  Status s = write_safetensors(path, tensors, {{"format", "pt"}});
  ASSERT_TRUE(s.ok()) << s.message();
}

}  // namespace mistral::testing
