// Used only while the tokenizer library is not part of the build: registers no commands.
#include "apps/cli/commands.h"

namespace mistral::cli {
void add_tokenizer_commands(CLI::App&) {}
}  // namespace mistral::cli
