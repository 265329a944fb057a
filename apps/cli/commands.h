// The `mistral` command-line tool: each subcommand lives in its own cmd_*.cc file and registers
// itself on the CLI11 app through one add_*_command function. Commands parse arguments and call
// the library; they hold no model logic.
#pragma once

#include <CLI/CLI.hpp>

#include "core/status.h"

namespace mistral::cli {

// Prints "error: <message>" to stderr and makes the tool exit with status 1.
[[noreturn]] void fail(const Status& status);
// Unwraps a Result or fails with its Status.
template <typename T>
T value_or_fail(Result<T> result) {
  if (!result.ok()) fail(result.status());
  return std::move(result).value();
}
inline void ok_or_fail(const Status& status) {
  if (!status.ok()) fail(status);
}

void add_logits_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_random_checkpoint_command(CLI::App& app);
void add_save_command(CLI::App& app);
void add_quantize_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_tokenizer_commands(CLI::App& app);  // tokenize, detokenize (cmd_tokenize.cc)
void add_chat_command(CLI::App& app);

}  // namespace mistral::cli
