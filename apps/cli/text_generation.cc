#include "apps/cli/text_generation.h"

#include <cstdio>

#include "tokenizer/stream_decoder.h"

namespace mistral::cli {

Result<TextModel> load_text_model(const ModelOptions& options, const std::string& tokenizer_path) {
  TextModel tm;
  MISTRAL_ASSIGN_OR_RETURN(
      tm.tokenizer, load_tokenizer(tokenizer_path.empty() ? options.model_dir : tokenizer_path));
  std::fprintf(stderr, "tokenizer: %s, instruct %s\n", tm.tokenizer->kind().c_str(),
               instruct_version_name(tm.tokenizer->instruct_version()));
  MISTRAL_ASSIGN_OR_RETURN(tm.model, load_model_from_options(options));
  if (tm.tokenizer->vocab_size() > tm.model->config().vocab_size) {
    return error(tm.tokenizer->kind() + ": " + std::to_string(tm.tokenizer->vocab_size()) +
                 " tokens do not fit the model's vocab_size of " +
                 std::to_string(tm.model->config().vocab_size));
  }
  return tm;
}

Result<TextResult> generate_text(TextModel& tm, const std::vector<int32_t>& prompt,
                                 GenerationConfig gen, bool stream) {
  StreamDecoder decoder(*tm.tokenizer);
  Status decode_status;
  std::string text;
  gen.on_token = [&](int64_t, int32_t token) {
    if (token >= tm.tokenizer->vocab_size()) return true;  // model-only ids have no text
    Result<std::string> piece = decoder.push(token);
    if (!piece.ok()) {
      decode_status = piece.status();
      return false;
    }
    text += *piece;
    if (stream) {
      std::fwrite(piece->data(), 1, piece->size(), stdout);
      std::fflush(stdout);
    }
    return true;
  };
  MISTRAL_ASSIGN_OR_RETURN(GenerationResult r, generate(*tm.model, {prompt}, gen));
  MISTRAL_RETURN_IF_ERROR(decode_status);
  const std::string rest = decoder.finish();
  text += rest;
  if (stream) {
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    std::fflush(stdout);
  }
  TextResult out;
  out.tokens = std::move(r.new_tokens[0]);
  out.text = std::move(text);
  out.finish_reason = r.finish_reasons[0];
  return out;
}

}  // namespace mistral::cli
