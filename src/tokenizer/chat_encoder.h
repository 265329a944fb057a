// ChatEncoder: a chat request -> the prompt ids the model sees, identical to mistral-common's
// MistralTokenizer.encode_chat_completion (test validation mode) for instruct versions v1, v2,
// v3, v7, v11 and v13 (text content, system prompts, multi-turn, tools, tool calls and results,
// assistant prefix). Borrows the tokenizer; immutable after create(), so thread-safe.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "tokenizer/chat_request.h"
#include "tokenizer/tokenizer.h"

namespace mistral {

class ChatEncoder {
 public:
  // `version` kNone means the tokenizer's own instruct_version(). Fails if the version is
  // unknown or the vocabulary lacks a control token the format needs (e.g. "[INST]").
  static Result<ChatEncoder> create(const Tokenizer& tokenizer,
                                    InstructVersion version = InstructVersion::kNone);

  InstructVersion version() const { return version_; }
  // Validates, normalizes and encodes; errors name the offending message or field.
  Result<std::vector<int32_t>> encode(const ChatRequest& request) const;
  // The same from the JSON text of {"messages": [...], "tools": [...]}.
  Result<std::vector<int32_t>> encode_json(std::string_view request_json) const;

 private:
  struct Ids {
    int32_t bos = -1, eos = -1;
    int32_t begin_inst = -1, end_inst = -1, begin_tools = -1, end_tools = -1;
    int32_t begin_tool_results = -1, end_tool_results = -1, tool_calls = -1;
    int32_t begin_system = -1, end_system = -1, begin_tool_content = -1;
    int32_t args = -1, call_id = -1;
  };
  ChatEncoder(const Tokenizer& tokenizer, InstructVersion version, Ids ids)
      : tokenizer_(&tokenizer), version_(version), ids_(ids) {}

  void text(std::string_view s, std::vector<int32_t>& out) const;
  Status encode_user(const InstructMessage& m, const InstructRequest& r, bool is_first,
                     bool is_last, std::vector<int32_t>& out) const;
  Status encode_assistant(const InstructMessage& m, bool before_last_user,
                          std::vector<int32_t>& out) const;
  Status encode_tool(const InstructMessage& m, bool before_last_user,
                     std::vector<int32_t>& out) const;
  void encode_tool_calls(const InstructMessage& m, std::vector<int32_t>& out) const;

  const Tokenizer* tokenizer_;
  InstructVersion version_;
  Ids ids_;
};

}  // namespace mistral
