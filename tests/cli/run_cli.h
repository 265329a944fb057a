// Runs the `mistral` tool (MISTRAL_CLI_PATH) with arguments and captures its output and status.
#pragma once

#include <stdio.h>
#include <sys/wait.h>

#include <array>
#include <string>

namespace mistral::testing {

struct RunResult {
  int status = -1;
  std::string output;
};

// `args` is appended to the command line as is (the shell parses it). With with_stderr false,
// only stdout is captured (for JSON output).
inline RunResult run(const std::string& args, bool with_stderr = true) {
  const std::string command =
      std::string(MISTRAL_CLI_PATH) + " " + args + (with_stderr ? " 2>&1" : " 2>/dev/null");
  RunResult r;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int raw = pclose(pipe);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return r;
}

}  // namespace mistral::testing
