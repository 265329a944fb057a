// Text in, text out: the tokenizer the checkpoint ships plus generation, streamed to stdout as
// whole UTF-8 characters. Shared by `generate --prompt/--chat` and `chat`.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "apps/cli/batch_input.h"
#include "core/status.h"
#include "engine/generator.h"
#include "tokenizer/tokenizer.h"

namespace mistral::cli {

struct TextModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

// Loads the model and its tokenizer (`tokenizer_path`, or the one the model directory ships),
// reporting the tokenizer chosen on stderr. Fails when the tokenizer's ids do not fit the model.
Result<TextModel> load_text_model(const ModelOptions& options, const std::string& tokenizer_path);

struct TextResult {
  std::vector<int32_t> tokens;
  std::string text;  // decoded, control tokens skipped
  FinishReason finish_reason = FinishReason::kLength;
};

// Generates from prompt ids, printing text as it is produced when `stream` is set.
Result<TextResult> generate_text(TextModel& tm, const std::vector<int32_t>& prompt,
                                 GenerationConfig gen, bool stream);

}  // namespace mistral::cli
