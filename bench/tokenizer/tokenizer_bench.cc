// Encoding throughput of one tokenizer on a corpus of JSON lines {"text": ...}, single-threaded:
//   tokenizer_bench TOKENIZER_FILE_OR_DIR CORPUS.jsonl [REPEATS]
// Prints one JSON line: bytes, documents, tokens, best seconds, MB/s and a hash of all ids (the
// same hash bench_tokenizers.py computes for the reference, so equal ids can be confirmed).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: tokenizer_bench TOKENIZER CORPUS.jsonl [REPEATS]\n");
    return 2;
  }
  const int repeats = argc > 3 ? std::max(1, std::atoi(argv[3])) : 3;
  auto tok = mistral::load_tokenizer(argv[1]);
  if (!tok.ok()) {
    std::fprintf(stderr, "error: %s\n", tok.status().message().c_str());
    return 1;
  }
  std::vector<std::string> docs;
  size_t bytes = 0;
  std::ifstream in(argv[2]);
  for (std::string line; std::getline(in, line);) {
    docs.push_back(nlohmann::json::parse(line)["text"].get<std::string>());
    bytes += docs.back().size();
  }
  double best = 1e30;
  size_t tokens = 0;
  uint64_t hash = 0;
  for (int r = 0; r < repeats; ++r) {
    tokens = 0;
    hash = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& d : docs) {
      const auto ids = (*tok)->encode(d, false, false);
      tokens += ids.size();
      for (int32_t id : ids) hash = hash * 1000003u + static_cast<uint64_t>(id) + 1;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
  }
  nlohmann::json out = {{"tokenizer", (*tok)->kind()},
                        {"bytes", bytes},
                        {"docs", docs.size()},
                        {"tokens", tokens},
                        {"seconds", best},
                        {"mb_per_s", bytes / best / 1e6},
                        {"hash", std::to_string(hash)}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
