#include "tokenizer/chat_request.h"

#include <algorithm>
#include <map>
#include <set>

namespace mistral {
namespace {

using Json = py_json::Json;

const char* role_name(ChatRole role) {
  switch (role) {
    case ChatRole::kSystem:
      return "system";
    case ChatRole::kUser:
      return "user";
    case ChatRole::kAssistant:
      return "assistant";
    case ChatRole::kTool:
      return "tool";
  }
  return "?";
}

Result<std::string> get_string(const Json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return error(where + "." + key + ": expected a string");
  return it->get<std::string>();
}

Result<std::optional<std::string>> get_optional_string(const Json& obj, const char* key,
                                                       const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return error(where + "." + key + ": expected a string or null");
  return std::optional<std::string>(it->get<std::string>());
}

Status parse_content(const Json& obj, const std::string& where, bool required, ChatMessage& m) {
  auto it = obj.find("content");
  if (it == obj.end() || it->is_null()) {
    if (required) return error(where + ".content: required for this role");
    return Status();
  }
  m.has_content = true;
  if (it->is_string()) {
    m.chunks.push_back(it->get<std::string>());
    return Status();
  }
  if (!it->is_array()) return error(where + ".content: expected a string or a list of chunks");
  m.content_is_list = true;
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& chunk = (*it)[i];
    const std::string cw = where + ".content[" + std::to_string(i) + "]";
    if (!chunk.is_object()) return error(cw + ": expected an object");
    auto type = chunk.find("type");
    if (type != chunk.end() && (!type->is_string() || *type != "text")) {
      return error(cw + ".type: only text chunks are supported");
    }
    MISTRAL_ASSIGN_OR_RETURN(std::string text, get_string(chunk, "text", cw));
    m.chunks.push_back(std::move(text));
  }
  return Status();
}

Result<ChatToolCall> parse_tool_call(const Json& j, const std::string& where) {
  if (!j.is_object()) return error(where + ": expected an object");
  ChatToolCall call;
  MISTRAL_ASSIGN_OR_RETURN(auto id, get_optional_string(j, "id", where));
  if (id) call.id = *id;
  auto fn = j.find("function");
  if (fn == j.end() || !fn->is_object()) return error(where + ".function: expected an object");
  MISTRAL_ASSIGN_OR_RETURN(call.name, get_string(*fn, "name", where + ".function"));
  auto args = fn->find("arguments");
  if (args == fn->end() || args->is_null()) {
    call.arguments = "{}";
  } else if (args->is_string()) {
    call.arguments = args->get<std::string>();
  } else if (args->is_object()) {
    call.arguments = py_json::dumps(*args);
  } else {
    return error(where + ".function.arguments: expected a string or an object");
  }
  return call;
}

// Python's re.match(r"^[a-zA-Z0-9_-]{1,64}$", s) (note "$" also matches before a final "\n").
bool matches_name(std::string_view s, bool allow_underscore_dash, size_t min_len, size_t max_len) {
  if (!s.empty() && s.back() == '\n') s.remove_suffix(1);
  if (s.size() < min_len || s.size() > max_len) return false;
  return std::all_of(s.begin(), s.end(), [&](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (allow_underscore_dash && (c == '_' || c == '-'));
  });
}
bool valid_function_name(std::string_view s) { return matches_name(s, true, 1, 64); }
bool valid_call_id(std::string_view s) { return matches_name(s, false, 9, 9); }

int vnum(InstructVersion v) { return static_cast<int>(v); }

}  // namespace

bool ChatMessage::content_truthy() const {
  if (!has_content) return false;
  if (content_is_list) return !chunks.empty();
  return !chunks.empty() && !chunks[0].empty();
}

std::string ChatMessage::joined_content() const {
  std::string out;
  for (const auto& c : chunks) {
    if (c.empty()) continue;
    if (!out.empty()) out += "\n\n";
    out += c;
  }
  return out;
}

Result<ChatRequest> parse_chat_request(const Json& json) {
  if (!json.is_object()) return error("chat request: expected a JSON object");
  auto msgs = json.find("messages");
  if (msgs == json.end() || !msgs->is_array()) return error("messages: expected a list");
  ChatRequest req;
  for (size_t i = 0; i < msgs->size(); ++i) {
    const Json& j = (*msgs)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!j.is_object()) return error(where + ": expected an object");
    MISTRAL_ASSIGN_OR_RETURN(std::string role, get_string(j, "role", where));
    ChatMessage m;
    if (role == "system")
      m.role = ChatRole::kSystem;
    else if (role == "user")
      m.role = ChatRole::kUser;
    else if (role == "assistant")
      m.role = ChatRole::kAssistant;
    else if (role == "tool")
      m.role = ChatRole::kTool;
    else
      return error(where + ".role: unknown role '" + role + "'");
    MISTRAL_RETURN_IF_ERROR(parse_content(j, where, m.role != ChatRole::kAssistant, m));
    if (m.role == ChatRole::kAssistant) {
      auto calls = j.find("tool_calls");
      if (calls != j.end() && !calls->is_null()) {
        if (!calls->is_array()) return error(where + ".tool_calls: expected a list");
        m.has_tool_calls = true;
        for (size_t k = 0; k < calls->size(); ++k) {
          MISTRAL_ASSIGN_OR_RETURN(
              auto call,
              parse_tool_call((*calls)[k], where + ".tool_calls[" + std::to_string(k) + "]"));
          m.tool_calls.push_back(std::move(call));
        }
      }
      auto prefix = j.find("prefix");
      if (prefix != j.end()) {
        if (!prefix->is_boolean()) return error(where + ".prefix: expected a boolean");
        m.prefix = prefix->get<bool>();
      }
    }
    if (m.role == ChatRole::kTool) {
      MISTRAL_ASSIGN_OR_RETURN(m.tool_call_id, get_optional_string(j, "tool_call_id", where));
      MISTRAL_ASSIGN_OR_RETURN(m.name, get_optional_string(j, "name", where));
    }
    req.messages.push_back(std::move(m));
  }
  auto tools = json.find("tools");
  if (tools != json.end() && !tools->is_null()) {
    if (!tools->is_array()) return error("tools: expected a list");
    for (size_t i = 0; i < tools->size(); ++i) {
      const Json& t = (*tools)[i];
      const std::string where = "tools[" + std::to_string(i) + "]";
      if (!t.is_object()) return error(where + ": expected an object");
      auto type = t.find("type");
      if (type != t.end() && *type != "function") return error(where + ".type: must be 'function'");
      auto fn = t.find("function");
      if (fn == t.end() || !fn->is_object()) return error(where + ".function: expected an object");
      ChatTool tool;
      MISTRAL_ASSIGN_OR_RETURN(tool.name, get_string(*fn, "name", where + ".function"));
      MISTRAL_ASSIGN_OR_RETURN(auto desc,
                               get_optional_string(*fn, "description", where + ".function"));
      tool.description = desc.value_or("");
      auto params = fn->find("parameters");
      if (params != fn->end() && !params->is_null()) {
        if (!params->is_object()) return error(where + ".function.parameters: expected an object");
        tool.parameters = *params;
      }
      req.tools.push_back(std::move(tool));
    }
  }
  return req;
}

Result<ChatRequest> parse_chat_request_text(std::string_view json_text) {
  Json json = Json::parse(json_text.begin(), json_text.end(), nullptr, false);
  if (json.is_discarded()) return error("chat request: not valid JSON");
  return parse_chat_request(json);
}

Status validate_chat_request(const ChatRequest& request, InstructVersion version) {
  const auto& msgs = request.messages;
  const int v = vnum(version);
  if (msgs.empty()) return error("messages: conversation must have at least one message");
  if (msgs.size() == 1 && msgs[0].role != ChatRole::kUser && msgs[0].role != ChatRole::kSystem) {
    return error("messages: conversation must start with a user message or system message");
  }
  if (msgs.size() > 1) {
    const auto& last = msgs.back();
    if (last.role == ChatRole::kAssistant && !last.prefix) {
      return error("messages: expected last role user or tool (or assistant with prefix)");
    }
  }
  for (size_t i = 1; i < msgs.size(); ++i) {
    const ChatRole prev = msgs[i - 1].role, cur = msgs[i].role;
    const bool ok = prev == ChatRole::kSystem || prev == ChatRole::kUser ? cur != ChatRole::kTool
                                                                         : cur != ChatRole::kSystem;
    if (!ok) {
      return error("messages[" + std::to_string(i) + "]: unexpected role '" + role_name(cur) +
                   "' after role '" + role_name(prev) + "'");
    }
  }
  // Tool calls must be answered before the next assistant turn.
  if (v < 11) {
    int expected = 0;
    for (size_t i = 1; i < msgs.size(); ++i) {
      if (msgs[i].role == ChatRole::kTool) --expected;
      if (msgs[i].role == ChatRole::kAssistant) {
        if (expected != 0) return error("messages: not the same number of tool calls and results");
        if (msgs[i].has_tool_calls) expected = static_cast<int>(msgs[i].tool_calls.size());
      }
    }
  } else {
    std::set<std::string> expected, observed;
    for (size_t i = 1; i < msgs.size(); ++i) {
      const auto& m = msgs[i];
      if (m.role == ChatRole::kTool) {
        const std::string id = m.tool_call_id.value_or("");
        if (observed.count(id) || !expected.count(id)) {
          return error("messages[" + std::to_string(i) + "].tool_call_id: unexpected or duplicate");
        }
        observed.insert(id);
      } else if (m.role == ChatRole::kAssistant) {
        if (expected.size() != observed.size()) {
          return error("messages: not the same number of tool calls and results");
        }
        expected.clear();
        observed.clear();
        for (const auto& c : m.tool_calls) {
          if (!expected.insert(c.id).second)
            return error("messages: duplicate tool call id " + c.id);
        }
      }
    }
  }
  for (size_t i = 0; i < msgs.size(); ++i) {
    const auto& m = msgs[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (m.role == ChatRole::kAssistant) {
      if (v < 7 && m.content_truthy() == (m.has_tool_calls && !m.tool_calls.empty())) {
        return error(where + ": assistant message must have either content or tool_calls");
      }
      for (const auto& c : m.tool_calls) {
        if (v >= 13) {
          if (c.id.empty() || c.id == "null") return error(where + ": tool call id required");
        } else if (v >= 3 && (c.id == "null" || !valid_call_id(c.id))) {
          return error(where + ": tool call id '" + c.id + "' must be 9 characters a-z, A-Z, 0-9");
        }
        if (!valid_function_name(c.name)) {
          return error(where + ": function name '" + c.name + "' must match [a-zA-Z0-9_-]{1,64}");
        }
      }
      if (m.prefix && i + 1 != msgs.size()) {
        return error(where + ": assistant message with prefix must be the last message");
      }
    } else if (m.role == ChatRole::kTool) {
      if (m.name && !valid_function_name(*m.name))
        return error(where + ".name: invalid function name");
      if (v >= 13) {
        if (!m.tool_call_id || m.tool_call_id->empty() || *m.tool_call_id == "null") {
          return error(where + ".tool_call_id: required");
        }
      } else if (v >= 3 && (!m.tool_call_id || !valid_call_id(*m.tool_call_id))) {
        return error(where + ".tool_call_id: must be 9 characters a-z, A-Z, 0-9");
      }
    }
  }
  for (size_t i = 0; i < request.tools.size(); ++i) {
    if (!valid_function_name(request.tools[i].name)) {
      return error("tools[" + std::to_string(i) +
                   "].function.name: must match [a-zA-Z0-9_-]{1,64}");
    }
  }
  return Status();
}

namespace {

// _normalize_json_content: "" -> "{}", JSON re-serialized, anything else kept.
std::string normalize_json_content(const std::string& content) {
  if (content.empty()) return "{}";
  auto parsed = py_json::loads(content);
  return parsed ? py_json::dumps(*parsed) : content;
}

// Joins the text of several messages with "\n\n", skipping empty ones.
std::string join_messages(const std::vector<const ChatMessage*>& group) {
  std::string out;
  for (const ChatMessage* m : group) {
    const std::string c = m->joined_content();
    if (c.empty()) continue;
    if (!out.empty()) out += "\n\n";
    out += c;
  }
  return out;
}

}  // namespace

Result<InstructRequest> normalize_chat_request(const ChatRequest& request,
                                               InstructVersion version) {
  const int v = vnum(version);
  InstructRequest out;
  out.tools = request.tools;
  if (v < 7) {
    std::string system;
    for (const auto& m : request.messages) {
      if (m.role != ChatRole::kSystem || !m.content_truthy()) continue;
      if (out.system_prompt) system += "\n\n";
      system += m.joined_content();
      out.system_prompt = system;
    }
  }
  std::vector<std::string> latest_call_ids;
  const auto& msgs = request.messages;
  for (size_t start = 0; start < msgs.size();) {
    size_t end = start;
    while (end < msgs.size() && msgs[end].role == msgs[start].role) ++end;
    std::vector<const ChatMessage*> group;
    for (size_t i = start; i < end; ++i) group.push_back(&msgs[i]);
    const ChatRole role = msgs[start].role;
    if (role == ChatRole::kUser) {
      InstructMessage m;
      m.role = role;
      m.content = join_messages(group);
      out.messages.push_back(std::move(m));
    } else if (role == ChatRole::kAssistant) {
      InstructMessage m;
      m.role = role;
      m.content = join_messages(group);
      for (const ChatMessage* g : group) {
        if (v < 7 && g->content_truthy() && !g->tool_calls.empty()) {
          return error("assistant message: tool calls and content cannot be used together");
        }
        for (const auto& c : g->tool_calls) {
          ChatToolCall call = c;
          call.arguments = normalize_json_content(c.arguments);
          m.tool_calls.push_back(std::move(call));
        }
        m.prefix = m.prefix || g->prefix;
      }
      for (const auto& c : m.tool_calls) latest_call_ids.push_back(c.id);
      out.messages.push_back(std::move(m));
    } else if (role == ChatRole::kTool) {
      std::vector<InstructMessage> results;
      for (const ChatMessage* g : group) {
        InstructMessage m;
        m.role = role;
        m.content = join_messages({g});
        if (v < 7) m.content = normalize_json_content(m.content);
        m.tool_call_id = g->tool_call_id;
        m.name = g->name;
        results.push_back(std::move(m));
      }
      if (v >= 11) {
        // InstructRequestNormalizerV13: results in the order of the calls, then as given.
        auto call_rank = [&](const InstructMessage& m) {
          const std::string id = m.tool_call_id.value_or("null");
          for (size_t k = 0; k < latest_call_ids.size(); ++k) {
            if (latest_call_ids[k] == id) return k;
          }
          return latest_call_ids.size();
        };
        std::map<std::string, size_t> result_index;
        for (size_t k = 0; k < results.size(); ++k) {
          result_index[results[k].tool_call_id.value_or("")] = k;
        }
        std::stable_sort(results.begin(), results.end(), [&](const auto& a, const auto& b) {
          const size_t ra = call_rank(a), rb = call_rank(b);
          if (ra != rb) return ra < rb;
          return result_index[a.tool_call_id.value_or("")] <
                 result_index[b.tool_call_id.value_or("")];
        });
      }
      latest_call_ids.clear();
      for (auto& r : results) out.messages.push_back(std::move(r));
    } else if (v >= 7) {
      for (const ChatMessage* g : group) {
        InstructMessage m;
        m.role = role;
        m.content = join_messages({g});
        out.messages.push_back(std::move(m));
      }
    }
    start = end;
  }
  if (out.messages.empty() || (v < 7 && out.messages[0].role != ChatRole::kUser)) {
    out.messages.insert(out.messages.begin(), InstructMessage{});
  }
  return out;
}

}  // namespace mistral
