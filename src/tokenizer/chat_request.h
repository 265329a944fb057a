// A chat request in the OpenAI / mistral-common form {"messages": [...], "tools": [...]}, parsed,
// validated and normalized the way mistral-common's MistralRequestValidator (test mode) and
// InstructRequestNormalizer do before encoding. Plain value types; text-only content.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "tokenizer/py_json.h"
#include "tokenizer/tokenizer.h"

namespace mistral {

enum class ChatRole { kSystem, kUser, kAssistant, kTool };

struct ChatToolCall {
  std::string id = "null";  // mistral-common's default when the request gives none
  std::string name;
  std::string arguments;  // JSON text (or any text) as given
};

struct ChatMessage {
  ChatRole role = ChatRole::kUser;
  // Content as text chunks. `content_is_list` keeps whether the request used a list of chunks;
  // `has_content` is false for a missing or null content.
  bool has_content = false;
  bool content_is_list = false;
  std::vector<std::string> chunks;
  bool has_tool_calls = false;  // tool_calls present and not null (may still be empty)
  std::vector<ChatToolCall> tool_calls;
  std::optional<std::string> tool_call_id;
  std::optional<std::string> name;
  bool prefix = false;

  bool content_truthy() const;  // Python's bool(content)
  std::string joined_content() const;
};

struct ChatTool {
  std::string name;
  std::string description;
  py_json::Json parameters = py_json::Json::object();
};

struct ChatRequest {
  std::vector<ChatMessage> messages;
  std::vector<ChatTool> tools;
};

// A normalized request (mistral-common's InstructRequest): consecutive messages of one role
// merged, content joined into one string, JSON in tool calls / results re-serialized.
struct InstructMessage {
  ChatRole role = ChatRole::kUser;
  std::string content;
  std::vector<ChatToolCall> tool_calls;
  std::optional<std::string> tool_call_id;
  std::optional<std::string> name;
  bool prefix = false;
};

struct InstructRequest {
  std::vector<InstructMessage> messages;
  std::optional<std::string> system_prompt;  // v1-v3 only; v7+ keeps system messages in place
  std::vector<ChatTool> tools;
};

// Parses the JSON request. Errors name the offending field, e.g. "messages[2].role".
Result<ChatRequest> parse_chat_request(const py_json::Json& json);
Result<ChatRequest> parse_chat_request_text(std::string_view json_text);

// Validation and normalization for one instruct version.
Status validate_chat_request(const ChatRequest& request, InstructVersion version);
Result<InstructRequest> normalize_chat_request(const ChatRequest& request, InstructVersion version);

}  // namespace mistral
