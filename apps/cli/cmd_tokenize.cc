// `mistral tokenize` and `mistral detokenize`: text or a chat request -> prompt ids, ids -> text,
// with the tokenizer the checkpoint directory ships (the choice is reported on stderr).
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/cli/commands.h"
#include "core/file_util.h"
#include "tokenizer/chat_encoder.h"
#include "tokenizer/tokenizer.h"

namespace mistral::cli {
namespace {

struct TokenizeOptions {
  std::string model;
  std::string text;
  std::string chat_file;
  bool no_bos = false;
  bool eos = false;
};

std::unique_ptr<Tokenizer> load_or_fail(const std::string& model) {
  auto tokenizer = value_or_fail(load_tokenizer(model));
  std::fprintf(stderr, "tokenizer: %s, instruct %s, %d tokens\n", tokenizer->kind().c_str(),
               instruct_version_name(tokenizer->instruct_version()), tokenizer->vocab_size());
  return tokenizer;
}

void print_ids(const std::vector<int32_t>& ids) {
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(ids[i]);
  }
  out += "]\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
}

void run_tokenize(const TokenizeOptions& o) {
  auto tokenizer = load_or_fail(o.model);
  if (!o.chat_file.empty()) {
    const std::string json = value_or_fail(read_file(o.chat_file, kMaxJsonFileBytes));
    auto encoder = value_or_fail(ChatEncoder::create(*tokenizer));
    auto ids = encoder.encode_json(json);
    if (!ids.ok()) fail(ids.status().with_context(o.chat_file));
    print_ids(*ids);
    return;
  }
  print_ids(tokenizer->encode(o.text, !o.no_bos, o.eos));
}

void run_detokenize(const std::string& model, std::string ids_json) {
  if (ids_json.empty()) {
    ids_json.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  auto json = nlohmann::json::parse(ids_json, nullptr, false);
  if (json.is_discarded() || !json.is_array()) fail(error("ids: expected a JSON list of integers"));
  std::vector<int32_t> ids;
  for (size_t i = 0; i < json.size(); ++i) {
    if (!json[i].is_number_integer() || json[i].get<int64_t>() < INT32_MIN ||
        json[i].get<int64_t>() > INT32_MAX) {
      fail(error("ids[" + std::to_string(i) + "]: expected an integer token id"));
    }
    ids.push_back(static_cast<int32_t>(json[i].get<int64_t>()));
  }
  auto tokenizer = load_or_fail(model);
  const std::string text = value_or_fail(tokenizer->decode(ids));
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
}

}  // namespace

void add_tokenizer_commands(CLI::App& app) {
  auto opts = std::make_shared<TokenizeOptions>();
  CLI::App* tok = app.add_subcommand(
      "tokenize", "Print the token ids of TEXT (or of a chat request) as a JSON list");
  tok->add_option("--model", opts->model, "checkpoint directory or tokenizer file")->required();
  tok->add_option("text", opts->text, "text to encode (BOS is added as the model sees it)");
  tok->add_option("--chat", opts->chat_file,
                  "chat request JSON file {\"messages\": [...], \"tools\": [...]}");
  tok->add_flag("--no-bos", opts->no_bos, "do not prepend BOS to TEXT");
  tok->add_flag("--eos", opts->eos, "append EOS to TEXT");
  tok->callback([opts] { run_tokenize(*opts); });

  auto model = std::make_shared<std::string>();
  auto ids = std::make_shared<std::string>();
  CLI::App* detok = app.add_subcommand(
      "detokenize", "Print the text of token ids given as a JSON list (argument or stdin)");
  detok->add_option("--model", *model, "checkpoint directory or tokenizer file")->required();
  detok->add_option("ids", *ids, "JSON list of ids, e.g. [1, 22557]; read from stdin if absent");
  detok->callback([model, ids] { run_detokenize(*model, *ids); });
}

}  // namespace mistral::cli
