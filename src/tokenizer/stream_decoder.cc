#include "tokenizer/stream_decoder.h"

#include "core/utf8.h"

namespace mistral {
namespace {

// Decoding the window each step costs O(window); it is cut back once it holds this many ids.
constexpr size_t kMaxWindow = 32;

// "<0xE2>": a SentencePiece / tokenizer.json byte-fallback token.
bool is_byte_piece(const std::string& piece) {
  return piece.size() == 6 && piece.compare(0, 3, "<0x") == 0 && piece[5] == '>';
}

}  // namespace

Result<std::string> StreamDecoder::push(int32_t id) {
  if (id < 0 || id >= tokenizer_.vocab_size()) {
    return error("token id " + std::to_string(id) + " out of range [0, " +
                 std::to_string(tokenizer_.vocab_size()) + ")");
  }
  window_.push_back(id);
  // Within a run of byte-fallback tokens, tokenizer.json's ByteFallback decoder may turn text it
  // already produced into U+FFFD when a later byte breaks the sequence, so nothing in the run is
  // final before the run ends. Control tokens are dropped before decoding: they do not end a run.
  for (auto it = window_.rbegin(); it != window_.rend(); ++it) {
    if (tokenizer_.is_control(*it)) continue;
    if (is_byte_piece(tokenizer_.id_to_piece(*it))) return std::string();
    break;
  }
  auto text = tokenizer_.decode(window_);
  if (!text.ok()) {
    window_.pop_back();
    return text.status();
  }
  // Decoders only ever change their trailing replacement characters when more ids arrive (an
  // unfinished byte sequence), so everything before them is final.
  const std::string& t = *text;
  size_t stable = t.size() - utf8::trailing_replacement_bytes(t);
  stable -= utf8::incomplete_tail_length(std::string_view(t).substr(0, stable));
  std::string out;
  if (stable > emitted_) {
    out = t.substr(emitted_, stable - emitted_);
    emitted_ = stable;
  }
  if (stable == t.size()) maybe_shrink_window(t);
  return out;
}

void StreamDecoder::maybe_shrink_window(const std::string& window_text) {
  if (window_.size() < kMaxWindow) return;
  // Keep the shortest suffix of ids that decodes to clean, non-empty text: it gives the next ids
  // the same left context (e.g. SentencePiece strips the space of the first text token only).
  for (size_t keep = 1; keep < window_.size(); ++keep) {
    std::span<const int32_t> tail(window_.data() + window_.size() - keep, keep);
    auto text = tokenizer_.decode(tail);
    if (!text.ok() || text->empty()) continue;
    if (text->find("\xEF\xBF\xBD") != std::string::npos) continue;
    if (window_text.size() < text->size() ||
        window_text.compare(window_text.size() - text->size(), text->size(), *text) != 0) {
      continue;
    }
    window_.erase(window_.begin(), window_.end() - static_cast<std::ptrdiff_t>(keep));
    emitted_ = text->size();
    return;
  }
}

std::string StreamDecoder::finish() {
  std::string out;
  auto text = tokenizer_.decode(window_);
  if (text.ok() && text->size() > emitted_) out = text->substr(emitted_);
  reset();
  return out;
}

void StreamDecoder::reset() {
  window_.clear();
  emitted_ = 0;
}

}  // namespace mistral
