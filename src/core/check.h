// MISTRAL_CHECK: aborts with file and line when an internal invariant is broken. Never used for
// user input (that returns a Status); unlike assert() it stays in release builds.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace mistral::internal {

class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition) {
    stream_ << file << ":" << line << ": check failed: " << condition << " ";
  }
  [[noreturn]] ~CheckFailure() {
    std::fprintf(stderr, "%s\n", stream_.str().c_str());
    std::fflush(stderr);
    std::abort();
  }
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

}  // namespace mistral::internal

#define MISTRAL_CHECK(condition) \
  if (condition) {               \
  } else                         \
    ::mistral::internal::CheckFailure(__FILE__, __LINE__, #condition).stream()
