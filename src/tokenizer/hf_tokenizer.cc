// Hugging Face tokenizer.json with a BPE model, in the layouts Mistral checkpoints ship: byte
// fallback with Prepend/Replace normalizers or a Metaspace pre-tokenizer (the two spellings of
// transformers' `legacy` flag: legacy=true writes Prepend+Replace, legacy=false writes Metaspace
// with prepend_scheme "first"; the file's pipeline is what HF runs, so it is what we run, and the
// flag declared in tokenizer_config.json is only reported in kind()), and the byte-level layout of
// tekken converted to tokenizer.json (Split by regex + ByteLevel). Added tokens, special tokens and
// the decoders are in hf_pipeline.cc. The merge loop is the `tokenizers` crate's
// (models/bpe/word.rs), reimplemented. Special added tokens are never matched in text (the crate's
// `encode_special_tokens = true`); non-special added tokens are.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <queue>
#include <unordered_map>

#include "core/utf8.h"
#include "tokenizer/hf_pipeline.h"
#include "tokenizer/limits.h"
#include "tokenizer/pair_map.h"
#include "tokenizer/tokenizer.h"

namespace mistral {
namespace {

using Json = nlohmann::json;
using namespace tokenizer_internal;

class HfTokenizer final : public Tokenizer {
 public:
  Status init(const std::string& file, const Json& j, const Json& config);

  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool add_eos) const override;
  Result<std::string> decode(std::span<const int32_t> ids) const override;
  std::string id_to_piece(int32_t id) const override {
    return id >= 0 && id < vocab_size() ? pieces_[id] : "";
  }
  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  bool is_control(int32_t id) const override {
    return id >= 0 && id < vocab_size() && special_[id];
  }
  std::optional<int32_t> control_token_id(std::string_view piece) const override {
    auto it = vocab_.find(std::string(piece));
    if (it == vocab_.end() || !special_[it->second]) return std::nullopt;
    return it->second;
  }
  const std::string& kind() const override { return kind_; }
  InstructVersion instruct_version() const override { return InstructVersion::kNone; }

 private:
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  // The id of a one-character piece (`ch` is one UTF-8 character), or -1.
  int32_t char_id(std::string_view ch) const {
    if (ch.size() == 1) return ascii_ids_[static_cast<uint8_t>(ch[0]) & 0x7F];
    uint32_t key = 0;
    for (const char c : ch) key = key << 8 | static_cast<uint8_t>(c);
    auto it = char_ids_.find(key);
    return it == char_ids_.end() ? -1 : it->second;
  }
  void encode_segment(std::string segment, bool first, std::vector<int32_t>& out) const;

  std::string kind_;
  std::vector<std::string> pieces_;  // by id
  std::vector<bool> special_;        // special added tokens
  std::unordered_map<std::string, int32_t> vocab_;
  int32_t ascii_ids_[128];
  std::unordered_map<uint32_t, int32_t> char_ids_;  // multi-byte one-character pieces
  // (left id << 32 | right id) -> (rank, merged id)
  PairMap<std::pair<int32_t, int32_t>> merges_;
  std::vector<std::pair<std::string, int32_t>> plain_added_;  // non-special added tokens
  int32_t byte_ids_[256];
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  int32_t unk_ = -1, bos_ = -1, eos_ = -1;
  HfPipeline pipeline_;
};

Status HfTokenizer::init(const std::string& file, const Json& j, const Json& config) {
  if (!j.is_object()) return error("expected a JSON object");
  auto model = j.find("model");
  if (model == j.end() || !model->is_object()) return error("model: missing");
  if (model->value("type", "BPE") != "BPE") {
    return error("model.type: only BPE is supported, not " + model->value("type", ""));
  }
  auto vocab = model->find("vocab");
  if (vocab == model->end() || !vocab->is_object()) return error("model.vocab: expected an object");
  if (vocab->size() > kMaxVocabSize) return error("model.vocab: too many entries");
  if (vocab->empty()) return error("model.vocab: empty");
  int64_t max_id = -1;
  auto add_piece = [&](const std::string& piece, int64_t id, const std::string& where) -> Status {
    if (id < 0 || static_cast<size_t>(id) >= kMaxVocabSize) {
      return error(where + ": id " + std::to_string(id) + " out of range");
    }
    if (piece.size() > kMaxPieceBytes) {
      return error(where + ": piece of " + std::to_string(piece.size()) + " bytes is too long");
    }
    max_id = std::max(max_id, id);
    auto [it, inserted] = vocab_.emplace(piece, static_cast<int32_t>(id));
    if (!inserted && it->second != id) return error(where + ": '" + piece + "' has two ids");
    return Status();
  };
  for (const auto& [piece, id] : vocab->items()) {
    if (!id.is_number_integer()) return error("model.vocab['" + piece + "']: id not an integer");
    MISTRAL_RETURN_IF_ERROR(add_piece(piece, id.get<int64_t>(), "model.vocab['" + piece + "']"));
  }
  std::vector<std::pair<std::string, bool>> added;  // content, special
  std::vector<int64_t> added_ids;
  if (auto at = j.find("added_tokens"); at != j.end() && at->is_array()) {
    for (size_t i = 0; i < at->size(); ++i) {
      const Json& t = (*at)[i];
      const std::string where = "added_tokens[" + std::to_string(i) + "]";
      if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
          !t.contains("content") || !t["content"].is_string()) {
        return error(where + ": expected {id, content, special}");
      }
      const std::string content = t["content"].get<std::string>();
      MISTRAL_RETURN_IF_ERROR(add_piece(content, t["id"].get<int64_t>(), where));
      added.emplace_back(content, t.value("special", false));
      added_ids.push_back(t["id"].get<int64_t>());
    }
  }
  pieces_.assign(static_cast<size_t>(max_id + 1), "");
  special_.assign(pieces_.size(), false);
  std::vector<bool> taken(pieces_.size(), false);
  for (const auto& [piece, id] : vocab_) {
    // Two pieces under one id would make decode return whichever came last.
    if (taken[id]) {
      return error("model.vocab: id " + std::to_string(id) + " is given to both '" + pieces_[id] +
                   "' and '" + piece + "'");
    }
    taken[id] = true;
    pieces_[id] = piece;
  }
  for (size_t i = 0; i < added.size(); ++i) {
    if (added[i].second)
      special_[added_ids[i]] = true;
    else if (!added[i].first.empty())
      plain_added_.emplace_back(added[i].first, added_ids[i]);
  }
  std::sort(plain_added_.begin(), plain_added_.end(), [](const auto& a, const auto& b) {
    return a.first.size() > b.first.size();  // longest match first
  });

  auto merges = model->find("merges");
  if (merges != model->end() && !merges->is_null()) {
    if (!merges->is_array()) return error("model.merges: expected a list");
    for (size_t i = 0; i < merges->size(); ++i) {
      const Json& m = (*merges)[i];
      const std::string where = "model.merges[" + std::to_string(i) + "]";
      std::string a, b;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
          return error(where + ": expected \"left right\"");
        }
        a = s.substr(0, space);
        b = s.substr(space + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        return error(where + ": expected \"left right\" or [left, right]");
      }
      auto ia = vocab_.find(a), ib = vocab_.find(b), ic = vocab_.find(a + b);
      if (ia == vocab_.end()) return error(where + ": unknown token '" + a + "'");
      if (ib == vocab_.end()) return error(where + ": unknown token '" + b + "'");
      if (ic == vocab_.end()) return error(where + ": merged token '" + a + b + "' not in vocab");
      const uint64_t key =
          (static_cast<uint64_t>(ia->second) << 32) | static_cast<uint32_t>(ib->second);
      merges_.set(key, std::make_pair(static_cast<int32_t>(i), ic->second));
    }
  }
  byte_fallback_ = model->value("byte_fallback", false);
  fuse_unk_ = model->value("fuse_unk", false);
  ignore_merges_ = model->value("ignore_merges", false);
  if (auto unk = model->find("unk_token"); unk != model->end() && unk->is_string()) {
    auto it = vocab_.find(unk->get<std::string>());
    if (it == vocab_.end()) return error("model.unk_token: not in the vocabulary");
    unk_ = it->second;
  }
  std::fill(std::begin(ascii_ids_), std::end(ascii_ids_), -1);
  for (const auto& [piece, id] : vocab_) {
    const auto lead = static_cast<uint8_t>(piece.empty() ? 0 : piece[0]);
    const size_t len = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    if (piece.empty() || piece.size() != len) continue;
    if (len == 1) {
      ascii_ids_[lead] = id;
    } else {
      uint32_t key = 0;
      for (const char c : piece) key = key << 8 | static_cast<uint8_t>(c);
      char_ids_[key] = id;
    }
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = vocab_.find(name);
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
  MISTRAL_RETURN_IF_ERROR(pipeline_.init(j));

  // BOS/EOS: tokenizer_config.json names them; Mistral's defaults otherwise.
  auto token_name = [&](const char* key, const char* fallback) {
    std::string name = fallback;
    if (auto it = config.find(key); it != config.end()) {
      if (it->is_string())
        name = it->get<std::string>();
      else if (it->is_object() && it->contains("content"))
        name = (*it)["content"].get<std::string>();
    }
    auto found = vocab_.find(name);
    return found == vocab_.end() ? -1 : found->second;
  };
  bos_ = token_name("bos_token", "<s>");
  eos_ = token_name("eos_token", "</s>");
  kind_ = "tokenizer.json BPE (" + file +
          (config.contains("legacy") && config["legacy"].is_boolean()
               ? std::string(", legacy=") + (config["legacy"].get<bool>() ? "true" : "false")
               : std::string()) +
          ")";
  return Status();
}

void HfTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(std::string(word)); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // Symbols: one per character (or per byte through <0xXX> fallback), linked as in word.rs.
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  auto push = [&](int32_t id) {
    const int32_t n = static_cast<int32_t>(syms.size());
    syms.push_back({id, n - 1, n + 1, true});
  };
  for (size_t i = 0; i < word.size();) {
    size_t len = 1;
    const auto c = static_cast<uint8_t>(word[i]);
    if (c >= 0xF0)
      len = 4;
    else if (c >= 0xE0)
      len = 3;
    else if (c >= 0xC0)
      len = 2;
    len = std::min(len, word.size() - i);
    const std::string_view ch = word.substr(i, len);
    i += len;
    if (const int32_t id = char_id(ch); id >= 0) {
      push(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (const char b : ch) all = all && byte_ids_[static_cast<uint8_t>(b)] >= 0;
      if (all) {
        for (const char b : ch) push(byte_ids_[static_cast<uint8_t>(b)]);
        continue;
      }
    }
    if (unk_ < 0) continue;  // the crate fails here; dropping the character is the gentle choice
    if (fuse_unk_ && !syms.empty() && syms.back().id == unk_) continue;
    push(unk_);
  }
  if (!syms.empty()) syms.back().next = -1;
  using Merge = std::tuple<int32_t, int32_t, int32_t>;  // rank, pos, new id (min-heap)
  std::priority_queue<Merge, std::vector<Merge>, std::greater<Merge>> queue;
  auto lookup = [&](int32_t a, int32_t b) -> const std::pair<int32_t, int32_t>* {
    return merges_.find(PairMap<int32_t>::key(a, b));
  };
  for (size_t i = 0; i + 1 < syms.size(); ++i) {
    if (auto m = lookup(syms[i].id, syms[i + 1].id)) {
      queue.emplace(m->first, static_cast<int32_t>(i), m->second);
    }
  }
  while (!queue.empty()) {
    const auto [rank, pos, new_id] = queue.top();
    queue.pop();
    Symbol& left = syms[pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = syms[left.next];
    auto m = lookup(left.id, right.id);
    if (!m || m->second != new_id) continue;  // an expired entry
    left.id = new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) syms[left.next].prev = pos;
    if (left.prev >= 0) {
      if (auto p = lookup(syms[left.prev].id, left.id))
        queue.emplace(p->first, left.prev, p->second);
    }
    if (left.next >= 0) {
      if (auto n = lookup(left.id, syms[left.next].id)) queue.emplace(n->first, pos, n->second);
    }
  }
  for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
}

void HfTokenizer::encode_segment(std::string segment, bool first, std::vector<int32_t>& out) const {
  for (const auto& word : pipeline_.pre_tokenize(pipeline_.normalize(std::move(segment)), first)) {
    encode_word(word, out);
  }
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text, bool add_bos, bool add_eos) const {
  std::string clean;
  text = utf8::valid_or_replaced(text, clean);
  std::vector<int32_t> out;
  if (add_bos && bos_ >= 0) out.push_back(bos_);
  // Non-special added tokens split the text first; each piece in between is encoded alone.
  size_t start = 0, pos = 0;
  bool first = true;
  while (pos < text.size() && !plain_added_.empty()) {
    const auto match = std::find_if(plain_added_.begin(), plain_added_.end(), [&](const auto& t) {
      return text.compare(pos, t.first.size(), t.first) == 0;
    });
    if (match == plain_added_.end()) {
      ++pos;
      continue;
    }
    if (pos > start) encode_segment(std::string(text.substr(start, pos - start)), first, out);
    first = false;
    out.push_back(match->second);
    pos += match->first.size();
    start = pos;
  }
  if (start < text.size()) encode_segment(std::string(text.substr(start)), first, out);
  if (add_eos && eos_ >= 0) out.push_back(eos_);
  return out;
}

Result<std::string> HfTokenizer::decode(std::span<const int32_t> ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || (pieces_[id].empty() && !vocab_.count(""))) {
      return error("token id " + std::to_string(id) + " out of range or unused");
    }
    if (!special_[id]) tokens.push_back(pieces_[id]);
  }
  return pipeline_.decode(std::move(tokens));
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> load_hf_tokenizer(const std::string& file) {
  MISTRAL_ASSIGN_OR_RETURN(std::string data, read_file(file, kMaxTokenizerFileBytes));
  Json j = Json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return error(file + ": not valid JSON (truncated or corrupt?)");
  Json config = Json::object();
  const auto config_path = std::filesystem::path(file).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (std::filesystem::is_regular_file(config_path, ec)) {
    auto text = read_file(config_path.string(), size_t{16} << 20);
    if (!text.ok()) return text.status();
    config = Json::parse(*text, nullptr, false);
    if (config.is_discarded() || !config.is_object()) {
      return error(config_path.string() + ": not a valid JSON object");
    }
  }
  auto tok = std::make_unique<HfTokenizer>();
  // A field of the wrong type deep in the file surfaces as a JSON exception: a clear error too.
  try {
    MISTRAL_RETURN_IF_ERROR(tok->init(file, j, config).with_context(file));
  } catch (const nlohmann::json::exception& e) {
    return error(file + ": a field has the wrong type (" + e.what() + ")");
  }
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

}  // namespace mistral
