// Test driver for the differential tests (test_differential.py): loads one tokenizer, then answers
// JSON requests read line by line from stdin with one JSON line each on stdout:
//   {"text": "..."} or {"hex": "e282"}      -> {"ids": [...]}            (no BOS/EOS)
//   {"decode": [ids]}                         -> {"text": "..."} | {"error": "..."}
//   {"stream": [ids]}                         -> {"pieces": [...], "valid": all whole chars}
//   {"piece": id}                             -> {"piece": "..."}
//   {"chat": {...}}                           -> {"ids": [...]} | {"error": "..."}
//   {"info": true}                            -> vocab size, bos, eos, kind, version, controls
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "tokenizer/chat_encoder.h"
#include "tokenizer/stream_decoder.h"
#include "tokenizer/tokenizer.h"
#include "core/utf8.h"

namespace {

using json = nlohmann::ordered_json;  // keeps key order, which the chat formats print

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  }
  return out;
}

std::vector<int32_t> to_ids(const json& j) {
  std::vector<int32_t> ids;
  for (const auto& v : j) ids.push_back(v.get<int32_t>());
  return ids;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: tokenizer_driver TOKENIZER_DIR_OR_FILE < requests.jsonl\n");
    return 2;
  }
  auto loaded = mistral::load_tokenizer(argv[1]);
  if (!loaded.ok()) {
    std::fprintf(stderr, "error: %s\n", loaded.status().message().c_str());
    return 1;
  }
  const mistral::Tokenizer& tok = **loaded;
  auto encoder = mistral::ChatEncoder::create(tok);
  std::string line;
  while (std::getline(std::cin, line)) {
    json req = json::parse(line);
    json resp;
    if (req.contains("text") || req.contains("hex")) {
      const std::string text =
          req.contains("text") ? req["text"].get<std::string>() : from_hex(req["hex"]);
      resp["ids"] = tok.encode(text, req.value("bos", false), req.value("eos", false));
    } else if (req.contains("decode")) {
      auto text = tok.decode(to_ids(req["decode"]));
      if (text.ok())
        resp["text"] = *text;
      else
        resp["error"] = text.status().message();
    } else if (req.contains("stream")) {
      mistral::StreamDecoder stream(tok);
      json pieces = json::array();
      bool valid = true;  // every piece whole UTF-8 characters
      auto add = [&](const std::string& piece) {
        valid = valid && mistral::utf8::valid_prefix_length(piece) == piece.size();
        pieces.push_back(piece);
      };
      for (int32_t id : to_ids(req["stream"])) {
        auto piece = stream.push(id);
        add(piece.ok() ? *piece : "<error>");
      }
      add(stream.finish());
      resp["pieces"] = pieces;
      resp["valid"] = valid;
    } else if (req.contains("piece")) {
      resp["piece"] = tok.id_to_piece(req["piece"].get<int32_t>());
    } else if (req.contains("chat")) {
      if (!encoder.ok()) {
        resp["error"] = encoder.status().message();
      } else {
        auto parsed = mistral::parse_chat_request(req["chat"]);
        auto ids = parsed.ok() ? encoder->encode(*parsed)
                               : mistral::Result<std::vector<int32_t>>(parsed.status());
        if (ids.ok())
          resp["ids"] = *ids;
        else
          resp["error"] = ids.status().message();
      }
    } else if (req.contains("info")) {
      resp["vocab_size"] = tok.vocab_size();
      resp["bos"] = tok.bos_id();
      resp["eos"] = tok.eos_id();
      resp["kind"] = tok.kind();
      resp["version"] = mistral::instruct_version_name(tok.instruct_version());
      json controls = json::array();
      for (int32_t i = 0; i < tok.vocab_size(); ++i) {
        if (tok.is_control(i)) controls.push_back(i);
      }
      resp["controls"] = controls;
    }
    std::string out = resp.dump(-1, ' ', false, json::error_handler_t::replace);
    out += '\n';
    std::fwrite(out.data(), 1, out.size(), stdout);
  }
  return 0;
}
