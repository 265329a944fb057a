#include "tokenizer/sentencepiece_bpe.h"

#include <algorithm>
#include <cstring>
#include <queue>
#include <tuple>

#include "tokenizer/limits.h"

namespace mistral::tokenizer_internal {
namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // "▁"

bool read_varint(std::string_view& s, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && !s.empty(); shift += 7) {
    const auto b = static_cast<uint8_t>(s[0]);
    s.remove_prefix(1);
    v |= static_cast<uint64_t>(b & 0x7F) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

// Calls on_field(field, wire_type, varint value, bytes) for every field of a message.
template <typename F>
bool walk(std::string_view s, F&& on_field) {
  while (!s.empty()) {
    uint64_t key, v = 0;
    if (!read_varint(s, key)) return false;
    std::string_view bytes;
    switch (key & 7) {
      case 0:
        if (!read_varint(s, v)) return false;
        break;
      case 1:
        if (s.size() < 8) return false;
        bytes = s.substr(0, 8);
        s.remove_prefix(8);
        break;
      case 5:
        if (s.size() < 4) return false;
        bytes = s.substr(0, 4);
        s.remove_prefix(4);
        break;
      case 2:
        if (!read_varint(s, v) || v > s.size()) return false;
        bytes = s.substr(0, v);
        s.remove_prefix(v);
        break;
      default:
        return false;
    }
    if (!on_field(key >> 3, static_cast<int>(key & 7), v, bytes)) return false;
  }
  return true;
}

size_t utf8_len(uint8_t lead) { return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4; }

uint32_t pack(std::string_view ch) {
  uint32_t key = 0;
  for (const char c : ch) key = key << 8 | static_cast<uint8_t>(c);
  return key;
}

}  // namespace

Result<SpmModelInfo> parse_model_proto(std::string_view data) {
  SpmModelInfo info;
  std::string problem;
  const bool ok = walk(data, [&](uint64_t field, int wire, uint64_t, std::string_view bytes) {
    if (field == 1 && wire == 2) {  // pieces
      if (info.pieces.size() >= kMaxVocabSize) {
        problem = "more than " + std::to_string(kMaxVocabSize) + " pieces";
        return false;
      }
      SpmPiece p;
      const bool piece_ok = walk(bytes, [&](uint64_t f, int w, uint64_t v, std::string_view b) {
        if (f == 1 && w == 2) {
          if (b.size() > kMaxPieceBytes) {
            problem = "piece " + std::to_string(info.pieces.size()) + " is " +
                      std::to_string(b.size()) + " bytes long, more than the " +
                      std::to_string(kMaxPieceBytes) + " allowed";
            return false;
          }
          p.piece.assign(b);
        } else if (f == 2 && w == 5) {
          std::memcpy(&p.score, b.data(), 4);
        } else if (f == 3 && w == 0) {
          p.type = static_cast<int>(v);
        }
        return true;
      });
      if (!piece_ok) return false;
      // sentencepiece >= 0.2 refuses these; Debian's 0.1.97 aborts on them (Darts, zero-length
      // key).
      if (p.piece.empty() || p.piece.find('\0') != std::string::npos) {
        problem =
            "piece " + std::to_string(info.pieces.size()) + " is empty or contains a NUL byte";
        return false;
      }
      info.pieces.push_back(std::move(p));
    } else if (field == 2 && wire == 2) {  // trainer_spec
      return walk(bytes, [&](uint64_t f, int w, uint64_t v, std::string_view) {
        if (w != 0) return true;
        if (f == 3) info.model_type = static_cast<int>(v);
        if (f == 24) info.treat_whitespace_as_suffix = v != 0;
        if (f == 35) info.byte_fallback = v != 0;
        return true;
      });
    } else if (field == 3 && wire == 2) {  // normalizer_spec
      return walk(bytes, [&](uint64_t f, int w, uint64_t v, std::string_view b) {
        if (f == 1 && w == 2) info.normalizer_name.assign(b);
        if (f == 2 && w == 2) info.has_charsmap = !b.empty();
        if (f == 3 && w == 0) info.add_dummy_prefix = v != 0;
        if (f == 4 && w == 0) info.remove_extra_whitespaces = v != 0;
        if (f == 5 && w == 0) info.escape_whitespaces = v != 0;
        return true;
      });
    }
    return true;
  });
  if (!problem.empty()) return error(problem);
  if (!ok) return error("not a valid SentencePiece model (truncated or corrupt protobuf)");
  if (info.pieces.empty()) return error("no pieces: not a SentencePiece model");
  return info;
}

std::unique_ptr<SpmBpeEncoder> SpmBpeEncoder::create(const SpmModelInfo& info) {
  if (info.model_type != 2 || info.has_charsmap || info.remove_extra_whitespaces ||
      !info.escape_whitespaces || info.treat_whitespace_as_suffix) {
    return nullptr;
  }
  std::unique_ptr<SpmBpeEncoder> enc(new SpmBpeEncoder());
  enc->byte_fallback_ = info.byte_fallback;
  enc->add_dummy_prefix_ = info.add_dummy_prefix;
  std::fill(std::begin(enc->byte_ids_), std::end(enc->byte_ids_), -1);
  enc->scores_.resize(info.pieces.size());
  bool has_unk = false;
  for (size_t i = 0; i < info.pieces.size(); ++i) {
    const SpmPiece& p = info.pieces[i];
    const auto id = static_cast<int32_t>(i);
    enc->scores_[i] = p.score;
    if (p.type == 5 || p.piece.empty()) return nullptr;  // unused pieces need resegmentation
    if (p.type == 1 || p.type == 4) {
      if (!enc->pieces_.emplace(p.piece, id).second) return nullptr;
      if (p.type == 4) {
        enc->user_defined_.push_back(p.piece);
        enc->user_defined_first_bytes_[static_cast<uint8_t>(p.piece[0])] = 1;
      }
    } else if (p.type == 2) {
      enc->unk_id_ = id;
      has_unk = true;
    } else if (p.type == 6) {
      unsigned b = 0;
      if (p.piece.size() == 6 && std::sscanf(p.piece.c_str(), "<0x%2X>", &b) == 1 && b < 256) {
        enc->byte_ids_[b] = id;
      }
    }
  }
  if (!has_unk) return nullptr;
  std::fill(std::begin(enc->ascii_ids_), std::end(enc->ascii_ids_), -1);
  for (const auto& [piece, id] : enc->pieces_) {
    if (utf8_len(static_cast<uint8_t>(piece[0])) != piece.size()) continue;
    if (piece.size() == 1)
      enc->ascii_ids_[static_cast<uint8_t>(piece[0])] = id;
    else
      enc->char_ids_[pack(piece)] = id;
  }
  std::sort(enc->user_defined_.begin(), enc->user_defined_.end(),
            [](const auto& a, const auto& b) { return a.size() > b.size(); });
  // The merge table holds every split of a piece into two pieces. It covers every merge
  // sentencepiece can make as long as each character of each piece is itself a piece (then a
  // symbol outside the vocabulary never takes part in a merge); otherwise use the library.
  for (const auto& [piece, id] : enc->pieces_) {
    for (size_t k = 0; k < piece.size();) {
      const size_t len = utf8_len(static_cast<uint8_t>(piece[k]));
      if (!enc->pieces_.count(piece.substr(k, len))) return nullptr;
      k += len;
      if (k >= piece.size()) break;
      auto l = enc->pieces_.find(piece.substr(0, k)), r = enc->pieces_.find(piece.substr(k));
      if (l != enc->pieces_.end() && r != enc->pieces_.end()) {
        enc->merges_.set(PairMap<int32_t>::key(l->second, r->second), id);
      }
    }
  }
  return enc;
}

int32_t SpmBpeEncoder::char_id(std::string_view ch) const {
  if (ch.size() == 1) return ascii_ids_[static_cast<uint8_t>(ch[0]) & 0x7F];
  auto it = char_ids_.find(pack(ch));
  return it == char_ids_.end() ? -1 : it->second;
}

void SpmBpeEncoder::encode(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  // Normalization (identity spec): a dummy-prefix "▁", spaces escaped to "▁".
  std::string norm;
  norm.reserve(text.size() + text.size() / 4 + 3);
  if (add_dummy_prefix_) norm += kSpace;
  for (const char c : text) {
    if (c == ' ')
      norm += kSpace;
    else
      norm += c;
  }
  struct Symbol {
    int32_t id;  // -1: a character outside the vocabulary
    uint32_t begin, len;
    int32_t prev, next;
    bool frozen;  // a user-defined piece: never merged
  };
  std::vector<Symbol> syms;
  syms.reserve(norm.size());
  for (size_t i = 0; i < norm.size();) {
    size_t len = 0;
    bool frozen = false;
    if (user_defined_first_bytes_[static_cast<uint8_t>(norm[i])]) {
      for (const auto& u : user_defined_) {
        if (norm.compare(i, u.size(), u) == 0) {
          len = u.size();
          frozen = true;
          break;
        }
      }
    }
    if (len == 0) len = std::min(utf8_len(static_cast<uint8_t>(norm[i])), norm.size() - i);
    const auto n = static_cast<int32_t>(syms.size());
    const std::string_view sv = std::string_view(norm).substr(i, len);
    const int32_t id = frozen ? pieces_.at(std::string(sv)) : char_id(sv);
    syms.push_back(
        {id, static_cast<uint32_t>(i), static_cast<uint32_t>(len), n - 1, n + 1, frozen});
    i += len;
  }
  syms.back().next = -1;
  // Highest score first, then leftmost (bpe_model.cc's SymbolPairComparator).
  using Entry = std::tuple<float, int32_t, int32_t, int32_t>;  // -score, left, right, merged id
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> agenda;
  auto maybe_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0 || syms[left].frozen || syms[right].frozen) return;
    if (syms[left].id < 0 || syms[right].id < 0) return;
    const int32_t* it = merges_.find(PairMap<int32_t>::key(syms[left].id, syms[right].id));
    if (it == nullptr) return;
    agenda.emplace(-scores_[*it], left, right, *it);
  };
  for (size_t i = 1; i < syms.size(); ++i)
    maybe_add(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
  while (!agenda.empty()) {
    const auto [neg_score, left, right, merged] = agenda.top();
    agenda.pop();
    Symbol& l = syms[left];
    if (l.len == 0 || l.next != right || syms[right].len == 0) continue;  // stale
    Symbol& r = syms[right];
    const int32_t* it = merges_.find(PairMap<int32_t>::key(l.id, r.id));
    if (it == nullptr || *it != merged) continue;
    l.id = merged;
    l.len += r.len;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = left;
    r.len = 0;
    maybe_add(l.prev, left);
    maybe_add(left, l.next);
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    const Symbol& s = syms[i];
    if (s.id >= 0) {
      out.push_back(s.id);
    } else if (byte_fallback_) {
      for (uint32_t k = 0; k < s.len; ++k) {
        const int32_t b = byte_ids_[static_cast<uint8_t>(norm[s.begin + k])];
        out.push_back(b >= 0 ? b : unk_id_);
      }
    } else if (out.empty() || out.back() != unk_id_) {
      out.push_back(unk_id_);  // runs of unknown characters become one <unk>
    }
  }
}

}  // namespace mistral::tokenizer_internal
