// Entry point of the `mistral` tool: registers every subcommand and runs the one asked for.
#include <cstdio>
#include <cstdlib>

#include "apps/cli/commands.h"

namespace mistral::cli {

void fail(const Status& status) {
  std::fprintf(stderr, "error: %s\n", status.message().c_str());
  throw CLI::RuntimeError(1);
}

}  // namespace mistral::cli

int main(int argc, char** argv) {
  CLI::App app{"mistral: inference engine for Mistral-family models"};
  app.require_subcommand(1);
  mistral::cli::add_logits_command(app);
  mistral::cli::add_generate_command(app);
  mistral::cli::add_random_checkpoint_command(app);
  mistral::cli::add_save_command(app);
  mistral::cli::add_quantize_command(app);
  mistral::cli::add_bench_command(app);
  mistral::cli::add_tokenizer_commands(app);
  mistral::cli::add_chat_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
