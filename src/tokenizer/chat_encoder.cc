// Mistral's instruct formats, transcribed from mistral-common's InstructTokenizerV1/V2/V3/V7/
// V11/V13 (mistral_common/tokens/tokenizers/instruct.py). Each user-visible string is encoded on
// its own, so SentencePiece adds its dummy-prefix space to each one, exactly as the reference.
#include "tokenizer/chat_encoder.h"

namespace mistral {
namespace {

using Json = py_json::Json;

int vnum(InstructVersion v) { return static_cast<int>(v); }

// _parse_json_content: JSON if it parses, else the text itself.
Json parse_json_or_string(const std::string& s) {
  auto parsed = py_json::loads(s);
  return parsed ? std::move(*parsed) : Json(s);
}

std::string rstrip_spaces(std::string s) {
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

}  // namespace

Result<ChatEncoder> ChatEncoder::create(const Tokenizer& tokenizer, InstructVersion version) {
  if (version == InstructVersion::kNone) version = tokenizer.instruct_version();
  if (version == InstructVersion::kNone) {
    return error(tokenizer.kind() + ": no Mistral instruct version declared by the tokenizer file");
  }
  const int v = vnum(version);
  Ids ids;
  ids.bos = tokenizer.bos_id();
  ids.eos = tokenizer.eos_id();
  if (ids.bos < 0 || ids.eos < 0) return error(tokenizer.kind() + ": no <s> / </s> token");
  Status missing;
  auto need = [&](const char* piece, int32_t& id) {
    auto found = tokenizer.control_token_id(piece);
    if (!found && missing.ok()) {
      missing = error(tokenizer.kind() + ": control token " + piece + " needed by instruct " +
                      instruct_version_name(version) + " is not in the vocabulary");
    }
    id = found.value_or(-1);
  };
  if (v >= 2) {
    need("[INST]", ids.begin_inst);
    need("[/INST]", ids.end_inst);
    need("[AVAILABLE_TOOLS]", ids.begin_tools);
    need("[/AVAILABLE_TOOLS]", ids.end_tools);
    need("[TOOL_RESULTS]", ids.begin_tool_results);
    need("[/TOOL_RESULTS]", ids.end_tool_results);
    need("[TOOL_CALLS]", ids.tool_calls);
  }
  if (v >= 7) {
    need("[SYSTEM_PROMPT]", ids.begin_system);
    need("[/SYSTEM_PROMPT]", ids.end_system);
    need("[TOOL_CONTENT]", ids.begin_tool_content);
  }
  if (v >= 11) {
    need("[ARGS]", ids.args);
    need("[CALL_ID]", ids.call_id);
  }
  MISTRAL_RETURN_IF_ERROR(missing);
  return ChatEncoder(tokenizer, version, ids);
}

void ChatEncoder::text(std::string_view s, std::vector<int32_t>& out) const {
  const auto ids = tokenizer_->encode(s, false, false);
  out.insert(out.end(), ids.begin(), ids.end());
}

Status ChatEncoder::encode_user(const InstructMessage& m, const InstructRequest& r, bool is_first,
                                bool is_last, std::vector<int32_t>& out) const {
  const int v = vnum(version_);
  const std::string& system = r.system_prompt.value_or("");
  if (v == 1) {
    const std::string content =
        is_first && !system.empty() ? system + "\n\n" + m.content : m.content;
    text("[INST] " + content + " [/INST]", out);
    return Status();
  }
  // v2+: tools go before the last user message (v13: the first one).
  const bool tools_here = v >= 13 ? is_first : is_last;
  if (tools_here && !r.tools.empty()) {
    Json tools = Json::array();
    for (const auto& t : r.tools) {
      Json fn = Json::object();
      fn["name"] = t.name;
      fn["description"] = t.description;
      fn["parameters"] = t.parameters;
      Json tool = Json::object();
      tool["type"] = "function";
      tool["function"] = std::move(fn);
      tools.push_back(std::move(tool));
    }
    out.push_back(ids_.begin_tools);
    text(py_json::dumps(tools), out);
    out.push_back(ids_.end_tools);
  }
  out.push_back(ids_.begin_inst);
  // v2/v3 put the system prompt in the last user message; v7+ has system messages instead.
  if (v < 7 && is_last && !system.empty()) {
    text(system + "\n\n" + m.content, out);
  } else {
    text(m.content, out);
  }
  out.push_back(ids_.end_inst);
  return Status();
}

void ChatEncoder::encode_tool_calls(const InstructMessage& m, std::vector<int32_t>& out) const {
  const int v = vnum(version_);
  if (v >= 11) {
    for (const auto& c : m.tool_calls) {
      out.push_back(ids_.tool_calls);
      text(c.name, out);
      if (v == 11 && !c.id.empty() && c.id != "null") {
        out.push_back(ids_.call_id);
        text(c.id, out);
      }
      out.push_back(ids_.args);
      text(py_json::dumps(parse_json_or_string(c.arguments)), out);
    }
    return;
  }
  Json calls = Json::array();
  for (const auto& c : m.tool_calls) {
    Json call = Json::object();
    call["name"] = c.name;
    call["arguments"] = parse_json_or_string(c.arguments);
    if (v >= 3 && !c.id.empty() && c.id != "null") call["id"] = c.id;
    calls.push_back(std::move(call));
  }
  out.push_back(ids_.tool_calls);
  text(py_json::dumps(calls), out);
}

Status ChatEncoder::encode_assistant(const InstructMessage& m, bool before_last_user,
                                     std::vector<int32_t>& out) const {
  const int v = vnum(version_);
  const bool has_calls = !m.tool_calls.empty();
  const bool has_content = !m.content.empty();
  if (v == 1) {
    if (has_calls) return error("tool calls are not supported by instruct v1");
    if (!has_content) return error("assistant message without content");
    text(m.content, out);
  } else if (v < 7) {
    if (has_calls && has_content) {
      return error("assistant message: tool calls and content cannot be used together");
    }
    if (has_calls) {
      if (v == 2 && before_last_user) return Status();  // v2 drops earlier tool calls
      encode_tool_calls(m, out);
    } else if (has_content) {
      text(rstrip_spaces(m.content), out);
    } else {
      return error("assistant message without content or tool calls");
    }
  } else {
    if (!has_calls && !has_content) return error("assistant message without content or tool calls");
    if (has_content) text(rstrip_spaces(m.content), out);
    if (has_calls) encode_tool_calls(m, out);
  }
  if (!m.prefix) out.push_back(ids_.eos);
  return Status();
}

Status ChatEncoder::encode_tool(const InstructMessage& m, bool before_last_user,
                                std::vector<int32_t>& out) const {
  const int v = vnum(version_);
  if (v == 1) return error("tool messages are not supported by instruct v1");
  out.push_back(ids_.begin_tool_results);
  if (v == 2) {
    if (before_last_user) {
      out.pop_back();
      return Status();
    }
    Json result = Json::object();
    result["name"] = m.name ? Json(*m.name) : Json(nullptr);
    result["content"] = parse_json_or_string(m.content);
    text(py_json::dumps(Json::array({result})), out);
  } else if (v == 3) {
    Json result = Json::object();
    result["content"] = parse_json_or_string(m.content);
    result["call_id"] = m.tool_call_id.value_or("");
    text(py_json::dumps(result), out);
  } else if (v < 13) {
    text(m.tool_call_id.value_or(""), out);
    out.push_back(ids_.begin_tool_content);
    text(m.content, out);
  } else {
    text(m.content, out);
  }
  out.push_back(ids_.end_tool_results);
  return Status();
}

Result<std::vector<int32_t>> ChatEncoder::encode(const ChatRequest& request) const {
  const int v = vnum(version_);
  MISTRAL_RETURN_IF_ERROR(validate_chat_request(request, version_));
  MISTRAL_ASSIGN_OR_RETURN(InstructRequest r, normalize_chat_request(request, version_));
  int first_user = -1, last_user = -1;
  for (size_t i = 0; i < r.messages.size(); ++i) {
    if (r.messages[i].role != ChatRole::kUser) continue;
    if (first_user < 0) first_user = static_cast<int>(i);
    last_user = static_cast<int>(i);
  }
  if (v == 2) {
    // InstructTokenizerV2._validate_tool_results: one result per call turn after the last user.
    bool call_turn = false;
    int results = 0;
    for (int i = std::max(last_user, 0); i < static_cast<int>(r.messages.size()); ++i) {
      const auto& m = r.messages[i];
      if (m.role == ChatRole::kAssistant) {
        call_turn = !m.tool_calls.empty();
        results = 0;
      } else if (m.role == ChatRole::kTool) {
        if (call_turn && ++results > 1) {
          return error("instruct v2 does not support several tool results for one assistant turn");
        }
      } else {
        call_turn = false;
        results = 0;
      }
    }
  }
  std::vector<int32_t> out = {ids_.bos};
  for (size_t i = 0; i < r.messages.size(); ++i) {
    const auto& m = r.messages[i];
    const int idx = static_cast<int>(i);
    const std::string where = "normalized message " + std::to_string(i);
    Status st;
    switch (m.role) {
      case ChatRole::kUser:
        st = encode_user(m, r, idx == first_user, idx == last_user, out);
        break;
      case ChatRole::kAssistant:
        st = encode_assistant(m, v != 3 && idx < last_user, out);
        break;
      case ChatRole::kTool:
        st = encode_tool(m, idx < last_user, out);
        break;
      case ChatRole::kSystem:
        if (v < 7) break;  // folded into the system prompt by normalization
        out.push_back(ids_.begin_system);
        text(m.content, out);
        out.push_back(ids_.end_system);
        break;
    }
    MISTRAL_RETURN_IF_ERROR(st.with_context(where));
  }
  return out;
}

Result<std::vector<int32_t>> ChatEncoder::encode_json(std::string_view request_json) const {
  MISTRAL_ASSIGN_OR_RETURN(ChatRequest request, parse_chat_request_text(request_json));
  return encode(request);
}

}  // namespace mistral
