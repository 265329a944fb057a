"""Writes the seed corpora of the tokenizer fuzz targets from the tokenizer files that the
mistral-common package ships, cut down to a few hundred vocabulary entries so that the fuzzer runs
fast and stays under -max_len (the full files are 0.5 to 19 MB):

  <corpus>/fuzz_tokenizer_tekken         tekken.json cuts of tekken_240718.json: the file's own
                                         config (1000 special tokens) and v7/v13-style variants with
                                         an explicit special_tokens list
  <corpus>/fuzz_tokenizer_sentencepiece  .model cuts of tokenizer.model.v1 and the v2/v3/v7 files
                                         (ModelProto with the pieces list shortened), plus tiny
                                         trained unigram/BPE models (the library-encoder path)
  <corpus>/fuzz_tokenizer_hf_json        tokenizer.json files written by
                                         tests/tokenizer/make_tokenizer_json.py from those cuts
                                         (legacy/first/metaspace and byte-level layouts), plus a
                                         hand-made one

Usage: python3 make_tokenizer_seeds.py <corpus-dir>. Needs mistral_common; sentencepiece (for
the trained models and the converted tokenizer.json files) is optional.
"""
import base64
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "tokenizer"))

TEKKEN_VOCAB = 400  # ranks kept: the 256 single bytes and the first merges
SPM_NORMAL_PIECES = 300  # ordinary pieces kept after the control and byte pieces


def data_dir():
    import mistral_common

    return Path(mistral_common.__file__).parent / "data"


def write(dir_, name, data):
    dir_.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (dir_ / f"{name}-{hashlib.sha1(data).hexdigest()[:8]}").write_bytes(data)


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# --- tekken.json -------------------------------------------------------------------------------


def tekken_cut(full, num_special, version, special_tokens=None, vocab=TEKKEN_VOCAB):
    """A valid tekken.json with the first `vocab` ranks of `full`."""
    config = dict(full["config"])
    config.update(default_vocab_size=num_special + vocab, default_num_special_tokens=num_special,
                  num_vocab_tokens=vocab, version=version)
    out = {"config": config, "vocab": full["vocab"][:vocab]}
    if special_tokens is not None:
        out["special_tokens"] = special_tokens
    return out


def tekken_seeds(out):
    full = json.loads((data_dir() / "tekken_240718.json").read_text())
    cuts = []
    # As shipped: v3, no special_tokens list (mistral-common's deprecated defaults), 1000 specials.
    cuts.append(tekken_cut(full, 1000, "v3"))
    cuts.append(tekken_cut(full, 20, "v3", vocab=300))
    # Newer files list their special tokens ({rank, token_str, is_control}).
    names = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
             "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
             "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
             "[TOOL_CONTENT]", "[ARGS]", "[CALL_ID]", "[THINK]", "[/THINK]"]
    specials = [{"rank": i, "token_str": s, "is_control": True} for i, s in enumerate(names)]
    cuts.append(tekken_cut(full, 32, "v7", specials))
    cuts.append(tekken_cut(full, len(names), "v13", specials, vocab=280))
    # Without the regex's \p classes (a shorter pattern for the mutator to work on).
    plain = tekken_cut(full, 8, "v11", specials[:8], vocab=300)
    plain["config"]["pattern"] = r"\s+|\w+| ?[^\s\w]+"
    cuts.append(plain)
    for cut in cuts:
        write(out, "tekken", dumps(cut))
    # The smallest valid files (~9 KB: the 256 byte ranks are required), for the mutator to work on.
    for tiny in tekken_tiny():
        write(out, "tekken-tiny", dumps(tiny))
    return cuts


def tekken_tiny():
    vocab = [{"rank": i, "token_bytes": base64.b64encode(bytes([i])).decode(), "token_str": None}
             for i in range(256)]
    for word in (b"hi", b" a", b"ab", b" ab", b"  "):
        vocab.append({"rank": len(vocab), "token_bytes": base64.b64encode(word).decode(),
                      "token_str": word.decode()})
    specials = [{"rank": i, "token_str": t, "is_control": True}
                for i, t in enumerate(["<unk>", "<s>", "</s>", "[INST]", "[/INST]"])]
    config = {"pattern": r"\s+|\w+| ?[^\s\w]+", "default_vocab_size": len(vocab) + 8,
              "default_num_special_tokens": 8, "version": "v7"}
    yield {"config": config, "vocab": vocab, "special_tokens": specials}
    yield {"config": dict(config, version="v3", default_vocab_size=len(vocab) + 24,
                          default_num_special_tokens=24), "vocab": vocab}
    pattern = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|\s+(?!\S)|\s+"
    yield {"config": dict(config, version="v13", pattern=pattern), "vocab": vocab,
           "special_tokens": specials}


# --- SentencePiece .model ----------------------------------------------------------------------


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(b, i):
    v = shift = 0
    while True:
        x = b[i]
        i += 1
        v |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return v, i


def proto_fields(b):
    """(field, raw bytes of the whole field incl. key) for each top-level field."""
    i = 0
    while i < len(b):
        start = i
        key, i = read_varint(b, i)
        wire = key & 7
        if wire == 0:
            _, i = read_varint(b, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = read_varint(b, i)
            i += n
        else:
            raise ValueError("unexpected wire type")
        yield key >> 3, b[start:i]


def piece_fields(raw):
    """(text, type) of a serialized `pieces` entry (type defaults to NORMAL = 1)."""
    _, i = read_varint(raw, 0)
    n, i = read_varint(raw, i)
    text, type_ = "", 1
    for field, f in proto_fields(raw[i:i + n]):
        if field == 1:
            _, j = read_varint(f, 0)
            _, j = read_varint(f, j)
            text = f[j:].decode("utf-8", "replace")
        elif field == 3:
            type_ = read_varint(f, 1)[0]
    return text, type_


def spm_cut(model_bytes, keep_controls):
    """The ModelProto with only the first `keep_controls` control pieces (after <unk> <s> </s>),
    all byte pieces, the first SPM_NORMAL_PIECES ordinary pieces and the one-character pieces
    these are made of (so that SpmBpeEncoder, which needs them, takes the model); other fields
    unchanged."""
    fields = list(proto_fields(model_bytes))
    pieces = [piece_fields(raw) if field == 1 else None for field, raw in fields]
    normal = [text for p in pieces if p and p[1] == 1 for text in [p[0]]][:SPM_NORMAL_PIECES]
    user_defined = [p[0] for p in pieces if p and p[1] == 4]
    chars = {c for text in normal + user_defined for c in text}
    out = bytearray()
    controls = kept = 0
    for (field, raw), piece in zip(fields, pieces):
        if piece is not None:
            text, t = piece
            if t == 3 and controls >= 2 + keep_controls:  # 2: <s> and </s>
                continue
            if t == 1 and kept >= SPM_NORMAL_PIECES and not (len(text) == 1 and text in chars):
                continue
            controls += t == 3
            kept += t == 1
        out += raw
    return bytes(out)


def spm_trained(model_type, vocab_size, byte_fallback=True, mistral_like=False):
    """A tiny model trained on a few lines (identity normalizer). mistral_like: normalized as
    Mistral's models are (extra whitespace kept, no user-defined pieces), so that SpmBpeEncoder
    takes it."""
    import sentencepiece as spm

    text = ["Hello world, hello tokenizer.", "The quick brown fox jumps over the lazy dog.",
            "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0\u3002 caf\u00e9 na\u00efve 12345",
            "[INST] what is 2 + 2? [/INST] 4</s>", "    indented code();\n\treturn 0;"] * 20
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=model, vocab_size=vocab_size,
        model_type=model_type, byte_fallback=byte_fallback, normalization_rule_name="identity",
        user_defined_symbols=[] if mistral_like else ["[REF]"],
        control_symbols=["[INST]", "[/INST]"], remove_extra_whitespaces=not mistral_like,
        hard_vocab_limit=False, minloglevel=2)
    return model.getvalue()


def spm_seeds(out):
    """Writes the .model seeds; returns {file name: small cut} of the mistral-common files."""
    cuts = []
    small = {}
    seen = set()
    for name in sorted(os.listdir(data_dir())):
        if ".model" not in name:
            continue
        data = (data_dir() / name).read_bytes()
        if hashlib.sha1(data).digest() in seen:  # v7 and v7m1 are the same file
            continue
        seen.add(hashlib.sha1(data).digest())
        for keep_controls in (8, 200):
            cut = spm_cut(data, keep_controls)
            small.setdefault(name, cut)
            if cut not in cuts:
                cuts.append(cut)
    try:
        cuts.append(spm_trained("unigram", 320))
        cuts.append(spm_trained("bpe", 320))
        cuts.append(spm_trained("bpe", 320, mistral_like=True))
        cuts.append(spm_trained("bpe", 60, byte_fallback=False, mistral_like=True))
        for model_type in ("bpe", "unigram", "char"):  # ~1 KB each
            cuts.append(spm_trained(model_type, 60, byte_fallback=False))
    except ImportError:
        print("make_tokenizer_seeds: no sentencepiece module, skipping trained models",
              file=sys.stderr)
    for cut in cuts:
        write(out, "spm", cut)
    return small


# --- tokenizer.json ----------------------------------------------------------------------------

def added_token(id_, content, special):
    return {"id": id_, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}


HAND_MADE = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [added_token(0, "<unk>", True), added_token(1, "<s>", True),
                     added_token(2, "</s>", True), added_token(3, "[INST]", True),
                     added_token(4, "[/INST]", True), added_token(13, "[REF]", False)],
    "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
    "pre_tokenizer": None,
    "post_processor": None,
    "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
              "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
              "byte_fallback": True, "ignore_merges": False,
              "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "[INST]": 3, "[/INST]": 4, "<0x0A>": 5,
                        "<0xE2>": 6, "\u2581": 7, "a": 8, "b": 9, "ab": 10, "\u2581a": 11,
                        "\u2581ab": 12, "[REF]": 13, "\u65e5": 14},
              "merges": ["a b", "\u2581 a", "\u2581a b"]},
}


def hf_tiny():
    """Minimal files (100-400 bytes), one per pipeline component, for the mutator to work on."""
    model = {"type": "BPE", "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4, "ab": 5,
                                      "\u2581": 6, "\u2581a": 7, "<0x41>": 8, "\u0120": 9},
             "merges": ["a b", "\u2581 a"], "unk_token": "<unk>"}
    specials = [{"id": 1, "content": "<s>", "special": True},
                {"id": 2, "content": "</s>", "special": True}]
    yield {"model": model}
    yield {"model": dict(model, merges=[["a", "b"], ["\u2581", "a"]], byte_fallback=True,
                         fuse_unk=True, ignore_merges=True),
           "added_tokens": specials + [{"id": 5, "content": "ab", "special": False}]}
    yield {"model": model, "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
           "decoder": {"type": "Sequence", "decoders": [
               {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
               {"type": "ByteFallback"}, {"type": "Fuse"},
               {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}}
    yield {"model": model, "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581",
                                             "prepend_scheme": "first", "split": True},
           "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always"}}
    yield {"model": model, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\s+|\\p{L}+|\\p{N}"}, "behavior": "Isolated",
         "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]},
           "decoder": {"type": "ByteLevel"}}
    yield {"model": model, "pre_tokenizer": {"type": "Split", "pattern": {"String": " "},
                                             "behavior": "Removed"}}
    yield {"model": model, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True}}


def hf_seeds(out, tekken_cuts, spm_models):
    import make_tokenizer_json

    write(out, "hf-hand", dumps(HAND_MADE))
    for tiny in hf_tiny():
        write(out, "hf-tiny", dumps(tiny))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i, cut in enumerate(tekken_cuts[1:3]):
            src = tmp / f"tekken{i}.json"
            src.write_text(json.dumps(cut))
            path = make_tokenizer_json.convert_tekken(src, tmp / f"tk{i}")
            write(out, "hf-tekken", dumps(json.loads(path.read_text())))
        try:
            import sentencepiece  # noqa: F401
        except ImportError:
            print("make_tokenizer_seeds: no sentencepiece module, skipping converted .model seeds",
                  file=sys.stderr)
            return
        picks = [m for name, m in sorted(spm_models.items()) if name.endswith((".v1", ".v3"))]
        for i, model in enumerate(picks):
            src = tmp / f"m{i}.model"
            src.write_bytes(model)
            for layout in ("legacy", "first", "metaspace"):
                path = make_tokenizer_json.convert(src, tmp / f"hf{i}{layout}", layout)
                write(out, f"hf-{layout}", dumps(json.loads(path.read_text())))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_tokenizer_seeds.py <corpus-dir>")
    corpus = Path(sys.argv[1])
    tekken = tekken_seeds(corpus / "fuzz_tokenizer_tekken")
    spm_models = spm_seeds(corpus / "fuzz_tokenizer_sentencepiece")
    hf_seeds(corpus / "fuzz_tokenizer_hf_json", tekken, spm_models)


if __name__ == "__main__":
    main()
