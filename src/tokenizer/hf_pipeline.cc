#include "tokenizer/hf_pipeline.h"

#include <array>
#include <cctype>
#include <unordered_map>

#include "core/utf8.h"

namespace mistral::tokenizer_internal {
namespace {

using Json = nlohmann::json;

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out += to;
  }
  if (pos == 0) return;
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

// The steps of a component: a "Sequence" lists them under `list_key`, anything else is one step.
std::vector<Json> steps_of(const Json& component, const char* list_key) {
  if (component.is_object() && component.value("type", "") == "Sequence" &&
      component.contains(list_key) && component[list_key].is_array()) {
    return component[list_key].get<std::vector<Json>>();
  }
  return {component};
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 to U+0100+.
const std::array<char32_t, 256>& byte_to_char() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      t[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
    }
    return t;
  }();
  return table;
}

std::string byte_level_encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) utf8::append_code_point(byte_to_char()[static_cast<uint8_t>(c)], out);
  return out;
}

// Appends the bytes a byte-level token stands for; false if it has a character outside the map.
bool byte_level_decode(std::string_view token, std::string& out) {
  static const std::unordered_map<char32_t, uint8_t> reverse = [] {
    std::unordered_map<char32_t, uint8_t> r;
    for (int b = 0; b < 256; ++b) r[byte_to_char()[b]] = static_cast<uint8_t>(b);
    return r;
  }();
  const size_t start = out.size();
  for (size_t i = 0; i < token.size();) {
    const auto lead = static_cast<uint8_t>(token[i]);
    char32_t cp;
    size_t len;
    if (lead < 0x80) {
      cp = lead;
      len = 1;
    } else if (lead < 0xE0 && i + 1 < token.size()) {
      cp = (char32_t(lead & 0x1F) << 6) | (token[i + 1] & 0x3F);
      len = 2;
    } else {
      out.resize(start);
      return false;  // byte-level characters are all below U+0800
    }
    auto it = reverse.find(cp);
    if (it == reverse.end()) {
      out.resize(start);
      return false;
    }
    out += static_cast<char>(it->second);
    i += len;
  }
  return true;
}

Result<std::string> string_pattern(const Json& op, const std::string& where) {
  auto pattern = op.find("pattern");
  if (pattern == op.end() || !pattern->is_object() || !pattern->contains("String") ||
      !(*pattern)["String"].is_string()) {
    return error(where + ".pattern: only {\"String\": ...} patterns are supported");
  }
  return (*pattern)["String"].get<std::string>();
}

}  // namespace

Status HfPipeline::init(const Json& j) {
  if (auto n = j.find("normalizer"); n != j.end() && !n->is_null()) {
    for (const Json& op : steps_of(*n, "normalizers")) {
      const std::string type = op.value("type", "");
      if (type == "Prepend") {
        normalizers_.push_back({Step::kPrepend, op.value("prepend", ""), ""});
      } else if (type == "Replace") {
        MISTRAL_ASSIGN_OR_RETURN(std::string from, string_pattern(op, "normalizer"));
        normalizers_.push_back({Step::kReplace, from, op.value("content", "")});
      } else {
        return error("normalizer: unsupported type '" + type + "'");
      }
    }
  }
  if (auto p = j.find("pre_tokenizer"); p != j.end() && !p->is_null()) {
    for (const Json& op : steps_of(*p, "pretokenizers")) {
      const std::string type = op.value("type", "");
      PreOp pre;
      if (type == "Metaspace") {
        pre.replacement = op.value("replacement", "\xE2\x96\x81");
        if (pre.replacement.empty()) return error("pre_tokenizer.Metaspace.replacement: empty");
        pre.split = op.value("split", true);
        std::string scheme = op.value("prepend_scheme", "");
        if (scheme.empty()) scheme = op.value("add_prefix_space", true) ? "always" : "never";
        if (scheme == "always")
          pre.scheme = Scheme::kAlways;
        else if (scheme == "first")
          pre.scheme = Scheme::kFirst;
        else if (scheme == "never")
          pre.scheme = Scheme::kNever;
        else
          return error("pre_tokenizer.prepend_scheme: unknown value '" + scheme + "'");
      } else if (type == "Split") {
        pre.kind = PreOp::kSplit;
        auto pattern = op.find("pattern");
        std::string regex;
        if (pattern != op.end() && pattern->contains("Regex") && (*pattern)["Regex"].is_string()) {
          regex = (*pattern)["Regex"].get<std::string>();
        } else if (pattern != op.end() && pattern->contains("String") &&
                   (*pattern)["String"].is_string()) {
          for (const char c : (*pattern)["String"].get<std::string>()) {  // quote it
            if (std::isalnum(static_cast<unsigned char>(c)) ||
                static_cast<unsigned char>(c) >= 0x80) {
              regex += c;
            } else {
              regex += std::string("\\") + c;
            }
          }
        } else {
          return error(
              "pre_tokenizer.Split.pattern: expected {\"Regex\": ...} or {\"String\": ...}");
        }
        const std::string behavior = op.value("behavior", "Isolated");
        if (behavior != "Isolated" && behavior != "Removed") {
          return error("pre_tokenizer.Split.behavior: '" + behavior + "' is not supported");
        }
        if (op.value("invert", false)) return error("pre_tokenizer.Split.invert: not supported");
        pre.remove_matches = behavior == "Removed";
        auto compiled = Regex::compile(regex);
        if (!compiled.ok()) return compiled.status().with_context("pre_tokenizer.Split.pattern");
        pre.regex = std::make_shared<Regex>(std::move(compiled).value());
      } else if (type == "ByteLevel") {
        pre.kind = PreOp::kByteLevel;
        pre.add_prefix_space = op.value("add_prefix_space", true);
        if (op.value("use_regex", true)) {
          // GPT-2's split, which ByteLevel applies when use_regex is on.
          auto compiled = Regex::compile(
              "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+");
          if (!compiled.ok()) return compiled.status();
          pre.regex = std::make_shared<Regex>(std::move(compiled).value());
        }
      } else {
        return error("pre_tokenizer: unsupported type '" + type + "'");
      }
      pre_tokenizers_.push_back(std::move(pre));
    }
  }
  if (auto d = j.find("decoder"); d != j.end() && !d->is_null()) {
    has_decoder_ = true;
    for (const Json& op : steps_of(*d, "decoders")) {
      const std::string type = op.value("type", "");
      Op o{Step::kFuse, "", ""};
      if (type == "Replace") {
        MISTRAL_ASSIGN_OR_RETURN(o.a, string_pattern(op, "decoder"));
        o.step = Step::kReplace;
        o.b = op.value("content", "");
      } else if (type == "ByteFallback") {
        o.step = Step::kByteFallback;
      } else if (type == "Fuse") {
        o.step = Step::kFuse;
      } else if (type == "Strip") {
        o.step = Step::kStrip;
        const std::string content = op.value("content", " ");
        if (content.size() != 1) return error("decoder.Strip: only one-byte content is supported");
        o.strip_char = content[0];
        for (const char* key : {"start", "stop"}) {  // byte counts: small non-negative integers
          if (op.contains(key) && (!op[key].is_number_unsigned() || op[key].get<uint64_t>() > 64)) {
            return error(std::string("decoder.Strip.") + key + ": expected an integer in [0, 64]");
          }
        }
        o.start = op.value("start", 0);
        o.stop = op.value("stop", 0);
      } else if (type == "ByteLevel") {
        o.step = Step::kByteLevel;
      } else if (type == "Metaspace") {
        o.step = Step::kMetaspace;
        o.a = op.value("replacement", "\xE2\x96\x81");
        if (o.a.empty()) return error("decoder.Metaspace.replacement: empty");
        std::string scheme = op.value("prepend_scheme", "");
        if (scheme.empty()) scheme = op.value("add_prefix_space", true) ? "always" : "never";
        o.prepend = scheme != "never";
      } else {
        return error("decoder: unsupported type '" + type + "'");
      }
      decoders_.push_back(std::move(o));
    }
  }
  return Status();
}

std::string HfPipeline::normalize(std::string text) const {
  for (const Op& op : normalizers_) {
    if (op.step == Step::kPrepend) {
      if (!text.empty()) text.insert(0, op.a);
    } else {
      replace_all(text, op.a, op.b);
    }
  }
  return text;
}

void HfPipeline::split_isolated(const PreOp& op, std::vector<Piece>& pieces) {
  std::vector<Piece> out;
  for (Piece& p : pieces) {
    size_t last = 0;
    const std::string& t = p.text;
    op.regex->for_each_match(t, [&](size_t begin, size_t end) {
      if (begin > last) out.push_back({t.substr(last, begin - last), p.at_start && last == 0});
      if (!op.remove_matches)
        out.push_back({t.substr(begin, end - begin), p.at_start && begin == 0});
      last = end;
    });
    if (last < t.size()) out.push_back({t.substr(last), p.at_start && last == 0});
  }
  pieces = std::move(out);
}

std::vector<std::string> HfPipeline::pre_tokenize(std::string text, bool first) const {
  std::vector<Piece> pieces;
  pieces.push_back({std::move(text), first});
  for (const PreOp& op : pre_tokenizers_) {
    if (op.kind == PreOp::kSplit) {
      split_isolated(op, pieces);
    } else if (op.kind == PreOp::kByteLevel) {
      for (Piece& p : pieces) {
        if (op.add_prefix_space && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
      }
      if (op.regex) split_isolated(op, pieces);
      for (Piece& p : pieces) p.text = byte_level_encode(p.text);
    } else {
      std::vector<Piece> out;
      for (Piece& p : pieces) {
        std::string& t = p.text;
        replace_all(t, " ", op.replacement);
        const bool starts = t.compare(0, op.replacement.size(), op.replacement) == 0;
        if (!starts &&
            (op.scheme == Scheme::kAlways || (op.scheme == Scheme::kFirst && p.at_start))) {
          t.insert(0, op.replacement);
        }
        if (!op.split) {
          out.push_back(std::move(p));
          continue;
        }
        // Split before every replacement (SplitDelimiterBehavior::MergedWithNext).
        size_t begin = 0;
        for (size_t hit = t.find(op.replacement, 1); hit != std::string::npos;
             hit = t.find(op.replacement, hit + op.replacement.size())) {
          if (hit > begin) out.push_back({t.substr(begin, hit - begin), p.at_start && begin == 0});
          begin = hit;
        }
        if (begin < t.size()) out.push_back({t.substr(begin), p.at_start && begin == 0});
      }
      pieces = std::move(out);
    }
  }
  std::vector<std::string> words;
  words.reserve(pieces.size());
  for (Piece& p : pieces) {
    if (!p.text.empty()) words.push_back(std::move(p.text));
  }
  return words;
}

std::string HfPipeline::decode(std::vector<std::string> tokens) const {
  if (!has_decoder_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  for (const Op& op : decoders_) {
    switch (op.step) {
      case Step::kReplace:
        for (auto& t : tokens) replace_all(t, op.a, op.b);
        break;
      case Step::kByteFallback: {
        std::vector<std::string> out;
        std::string bytes;
        size_t count = 0;
        auto flush = [&] {
          if (count == 0) return;
          if (utf8::valid_prefix_length(bytes) == bytes.size()) {
            out.push_back(bytes);
          } else {
            for (size_t i = 0; i < count; ++i) out.push_back("\xEF\xBF\xBD");
          }
          bytes.clear();
          count = 0;
        };
        for (auto& t : tokens) {
          if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
              std::isxdigit(static_cast<unsigned char>(t[3])) &&
              std::isxdigit(static_cast<unsigned char>(t[4]))) {
            bytes += static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16));
            ++count;
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens = std::move(out);
        break;
      }
      case Step::kFuse: {
        std::string all;
        for (const auto& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        break;
      }
      case Step::kStrip:
        for (auto& t : tokens) {
          size_t lead = 0, trail = 0;
          while (lead < static_cast<size_t>(op.start) && lead < t.size() &&
                 t[lead] == op.strip_char)
            ++lead;
          while (trail < static_cast<size_t>(op.stop) && trail + lead < t.size() &&
                 t[t.size() - 1 - trail] == op.strip_char) {
            ++trail;
          }
          t = t.substr(lead, t.size() - lead - trail);
        }
        break;
      case Step::kMetaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          // As the crate does it: in the first token every replacement character is dropped.
          replace_all(tokens[i], op.a, i == 0 && op.prepend ? "" : " ");
        }
        break;
      case Step::kByteLevel: {
        std::string bytes;
        for (const auto& t : tokens) {
          if (!byte_level_decode(t, bytes)) bytes += t;  // unmapped characters pass as UTF-8
        }
        tokens.assign(1, utf8::replace_invalid(bytes));
        break;
      }
      case Step::kPrepend:
        break;
    }
  }
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

}  // namespace mistral::tokenizer_internal
