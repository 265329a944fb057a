"""Seeded generators of hard tokenizer inputs and chat conversations for test_differential.py."""
import json
import random

WORDS = ["Hello", "world", "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "Mistral",
         "tokenizer", "don't", "I'm", "we'll", "can't", "naïve", "café", "Straße", "İstanbul", "ǅemal",
         "résumé", "ﬁnance", "ΑΒΓ", "αβγ", "Москва", "привет", "עברית", "العربية", "हिन्दी", "ภาษาไทย",
         "日本語", "中文", "한국어", "ABC", "CamelCase", "snake_case", "kebab-case", "UPPER", "x", "a", "I"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", "\u00a0", "\u3000", "\u0085", "\u2028", "\u2029",
          "\u200b", "\u202f", "\x0b", "\x0c", "\u1680", "\u2003", "   \n", " \t "]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "🤖", "🙂", "🧑🏿‍🚀", "✨", "🔥", "1️⃣", "🏳️‍🌈", "\U0001fae0"]
LOOKALIKES = ["[INST]", "[/INST]", "<s>", "</s>", "<unk>", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]",
              "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[SYSTEM_PROMPT]", "[TOOL_CONTENT]", "[ARGS]",
              "[CALL_ID]", "<0x0A>", "<0xFF>", "▁", "▁▁", "<SPECIAL_12>", "[IMG]", "<pad>", "[THINK]",
              "<|im_start|>", "<|endoftext|>", "[INST]Hi[/INST]", " [INST] ", "<<SYS>>", "[REF]", "[/REF]",
              "[REFERENCE_DOC_12]", "x[REFERENCE_DOC_1]y", "[REF][REF]", "[control_9]"]
CODE = ["def f(x):\n    return x**2\n", "if (a && b) { c->d[0] = 1; }", "<div class=\"a\">&amp;</div>",
        "{\"k\": [1, 2.5, null, true]}", "#include <stdio.h>\nint main(){}", "SELECT * FROM t WHERE id=1;",
        "    indented\n\tTabbed", "a_b-c.d/e\\f", "x = [i for i in range(10)]  # comment",
        "fn main() -> Result<(), Box<dyn Error>> {}", "$ ls -la | grep '^d'", "0x1F & ~mask >> 2"]
PUNCT = list("!?.,;:'\"()[]{}<>-–—…«»“”‘’@#$%^&*_=+|/\\~`") + ["...", "?!", "--", "''", "\"\""]
FIXED = ["", " ", "  ", "\n", "\n\n", "\t", "\r\n", "a", " a", "a ", "  a  ", "\ufeff", "\ufeffHello",
         "Hello\ufeff", "0", "00", "123456789012345678901234567890", "3.14159", "1,000,000", "١٢٣",
         "１２３", "é", "e\u0301", "\u0301", "\u0301\u0301a", "ß", "İ", "ﬁ", "\u200d", "\u00a0",
         " \u00a0 ", "\x00", "\x01\x02", "\x7f", "\U0010fffd", "\uffff", "\ufffd", "�", "▁", "▁Hello"]


def _random_char(r):
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
              (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x20A0, 0x20CF),
              (0x2190, 0x23FF), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xE000, 0xE0FF),
              (0xFE00, 0xFE0F), (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0x0, 0x1F)]
    lo, hi = r.choice(blocks)
    return chr(r.randint(lo, hi))


def _fragment(r):
    kind = r.randrange(12)
    if kind == 0:
        return " ".join(r.choice(WORDS) for _ in range(r.randint(1, 8)))
    if kind == 1:
        return "".join(r.choice(SPACES) for _ in range(r.randint(1, 6)))
    if kind == 2:
        return "".join(r.choice(EMOJI) for _ in range(r.randint(1, 4)))
    if kind == 3:
        return "".join(chr(r.randint(0x4E00, 0x9FFF)) for _ in range(r.randint(1, 10)))
    if kind == 4:
        base = r.choice("aeiouAEIOUnc")
        return base + "".join(chr(r.randint(0x300, 0x36F)) for _ in range(r.randint(1, 3)))
    if kind == 5:
        return "".join(r.choice("0123456789") for _ in range(r.randint(1, 25)))
    if kind == 6:
        return r.choice(CODE)
    if kind == 7:
        return r.choice(LOOKALIKES)
    if kind == 8:
        return "".join(_random_char(r) for _ in range(r.randint(1, 12)))
    if kind == 9:
        return "".join(r.choice(PUNCT) for _ in range(r.randint(1, 5)))
    if kind == 10:
        return r.choice([" ", "a", "-", "\n", "1", "😀", "ab", "\t", "=", "é"]) * r.randint(20, 300)
    return r.choice(FIXED)


def gen_strings(seed, n):
    r = random.Random(seed)
    out = list(FIXED) + list(LOOKALIKES) + list(CODE)
    while len(out) < n:
        s = "".join(_fragment(r) for _ in range(r.randint(1, 5)))
        if r.random() < 0.2:
            s = " " * r.randint(1, 3) + s
        if r.random() < 0.2:
            s = s + r.choice(SPACES)
        out.append(s)
    return out[:n]


def gen_invalid_utf8(seed, n):
    r = random.Random(seed)
    bad = [b"\x80", b"\xff", b"\xc0\xaf", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf0\x9f",
           b"\xe0\x80\x80", b"\xc3", b"\xf8\x88\x80\x80\x80", b"\xfe\xfe"]
    out = []
    for _ in range(n):
        s = "".join(_fragment(r) for _ in range(r.randint(1, 3))).encode()
        for _ in range(r.randint(1, 3)):
            cut = r.randint(0, len(s))
            s = s[:cut] + r.choice(bad + [bytes([r.randint(0x80, 0xFF)])]) + s[cut:]
        if r.random() < 0.3 and len(s) > 1:
            s = s[:-1]
        out.append(s)
    return out


# ---- chat conversations -------------------------------------------------------------------

NAMES = ["get_weather", "search", "calc", "lookup-user", "f", "A1_b-2", "send_email", "x" * 64]


def _json_value(r, depth=0):
    kind = r.randrange(8 if depth < 2 else 5)
    if kind == 0:
        return r.choice(["Paris", "", "naïve café", "[INST]", "line\nbreak", "tab\t", "quote\"", "😀", "\\"])
    if kind == 1:
        return r.choice([0, 1, -7, 42, 10**12, -(2**40)])
    if kind == 2:
        return r.choice([1.5, 0.1, -0.0, 3.0, 1e-7, 2.5e-5, 1e15, 1e16, 123456789.125, 1e100, 0.0001])
    if kind == 3:
        return r.choice([True, False])
    if kind == 4:
        return None
    if kind == 5:
        return [_json_value(r, depth + 1) for _ in range(r.randint(0, 3))]
    return {r.choice(["a", "b", "location", "unit", "été", "k k"]): _json_value(r, depth + 1)
            for _ in range(r.randint(0, 3))}


def _tool(r):
    params = {"type": "object", "properties": {
        "location": {"type": "string", "description": r.choice(["The city", "Ville 🌍", ""])},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}
    if r.random() < 0.2:
        params = {}
    fn = {"name": r.choice(NAMES), "parameters": params}
    if r.random() < 0.7:
        fn["description"] = r.choice(["Get the weather", "Recherche «web»", "", "x" * 50])
    return {"type": "function", "function": fn}


def _call_id(r):
    alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(r.choice(alnum) for _ in range(9))


def _arguments(r):
    kind = r.randrange(5)
    obj = {k: _json_value(r) for k in r.sample(["location", "unit", "q", "n", "été"], r.randint(0, 3))}
    if kind == 0:
        return obj
    if kind == 1:
        return json.dumps(obj)
    if kind == 2:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    if kind == 3:
        return r.choice(["not json", "", "[1, 2", "\"just a string\"", "5", "{\"a\": 1}  "])
    return json.dumps(_json_value(r))


def _content(r, texts):
    if r.random() < 0.25:
        return [{"type": "text", "text": r.choice(texts)} for _ in range(r.randint(1, 3))]
    return r.choice(texts)


def gen_conversation(r, version, texts):
    """A random request dict; mostly valid for `version`, sometimes deliberately not."""
    msgs = []
    tools = [_tool(r) for _ in range(r.randint(1, 3))] if version >= 2 and r.random() < 0.5 else None
    if r.random() < 0.4:
        msgs.append({"role": "system", "content": _content(r, texts)})
    turns = r.randint(1, 4)
    for turn in range(turns):
        msgs.append({"role": "user", "content": _content(r, texts)})
        if r.random() < 0.1:
            msgs.append({"role": r.choice(["user", "system"]), "content": _content(r, texts)})
        last = turn == turns - 1
        if last and r.random() < 0.6:
            break
        if tools and r.random() < 0.6:
            calls = [{"id": _call_id(r), "type": "function",
                      "function": {"name": r.choice(NAMES), "arguments": _arguments(r)}}
                     for _ in range(r.randint(1, 2))]
            msg = {"role": "assistant", "tool_calls": calls}
            if version >= 7 and r.random() < 0.3:
                msg["content"] = r.choice(texts)
            msgs.append(msg)
            for c in calls:
                res = {"role": "tool", "tool_call_id": c["id"],
                       "content": r.choice([json.dumps(_json_value(r)), r.choice(texts), "", "{\"t\": 21.5}"])}
                if r.random() < 0.7:
                    res["name"] = c["function"]["name"]
                msgs.append(res)
            if last:
                break
            if r.random() < 0.5:
                msgs.append({"role": "assistant", "content": _content(r, texts)})
        else:
            msgs.append({"role": "assistant", "content": _content(r, texts)})
    if msgs[-1]["role"] == "assistant" or r.random() < 0.1:
        if msgs[-1]["role"] in ("user", "tool", "system"):
            msgs.append({"role": "assistant", "content": r.choice(texts) or "x", "prefix": True})
        else:
            msgs[-1]["prefix"] = True
    if r.random() < 0.1:  # deliberately broken requests: both sides must refuse them
        k = r.randrange(5)
        if k == 0 and len(msgs) > 1:
            del msgs[r.randrange(len(msgs))]
        elif k == 1:
            msgs.append({"role": "tool", "tool_call_id": _call_id(r), "content": "orphan"})
        elif k == 2:
            for m in msgs:
                for c in m.get("tool_calls", []):
                    c["id"] = r.choice(["null", "short", "x" * 10])
        elif k == 3:
            msgs.insert(0, {"role": "assistant", "content": "first"})
        else:
            msgs.append({"role": "assistant", "content": ""})
    req = {"messages": msgs}
    if tools:
        req["tools"] = tools
    return req
