"""Writes a Hugging Face tokenizer.json (+ tokenizer_config.json) for a SentencePiece .model file,
the way transformers' LlamaConverter does (SentencePieceExtractor merges ordered by piece score),
using only the `sentencepiece` package so CI needs no transformers/torch.

Three layouts, as found on the Hub:
  legacy      normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer (transformers legacy=True)
  first       Metaspace pre-tokenizer, prepend_scheme "first", split false (legacy=False)
  metaspace   Metaspace pre-tokenizer and decoder, prepend_scheme "always", split true, pair merges
"""
import json
import sys
from pathlib import Path


def piece_types(model_path):
    """Piece types read from the ModelProto wire format (sentencepiece's Python API cannot tell
    user-defined pieces apart and the protobuf package is not needed this way)."""
    data = Path(model_path).read_bytes()

    def varint(b, i):
        v = shift = 0
        while True:
            x = b[i]
            i += 1
            v |= (x & 0x7F) << shift
            shift += 7
            if x < 0x80:
                return v, i

    def fields(b):
        i = 0
        while i < len(b):
            key, i = varint(b, i)
            wire = key & 7
            if wire == 0:
                v, i = varint(b, i)
            elif wire == 1:
                v, i = b[i:i + 8], i + 8
            elif wire == 5:
                v, i = b[i:i + 4], i + 4
            else:
                n, i = varint(b, i)
                v, i = b[i:i + n], i + n
            yield key >> 3, v

    types = []
    for field, value in fields(data):
        if field == 1:
            types.append(next((v for f, v in fields(value) if f == 3), 1))
    return types


def convert(model_path, out_dir, layout):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    n = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(n)}
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in range(n)}
    merges = []
    for merge, score in scores.items():
        local = [(merge[:k], merge[k:], score) for k in range(1, len(merge))
                 if merge[:k] in vocab and merge[k:] in vocab]
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda x: x[2], reverse=True)
    pairs = [[a, b] for a, b, _ in merges]
    added = [{"id": i, "content": sp.id_to_piece(i), "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i in range(n) if sp.is_control(i) or sp.is_unknown(i)]
    # User-defined pieces ([REF], ...) are matched in text by sentencepiece: transformers' SpmConverter
    # makes them non-special added tokens.
    added += [{"id": i, "content": sp.id_to_piece(i), "single_word": False, "lstrip": False, "rstrip": False,
               "normalized": False, "special": False} for i, t in enumerate(piece_types(model_path)) if t == 4]
    seq_decoder = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
           "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": seq_decoder,
           "model": {"type": "BPE", "dropout": None, "unk_token": sp.id_to_piece(sp.unk_id()),
                     "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                     "byte_fallback": True, "ignore_merges": False, "vocab": vocab,
                     "merges": [f"{a} {b}" for a, b in pairs]}}
    if layout == "legacy":
        tok["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    elif layout == "first":
        tok["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    else:
        tok["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
        tok["decoder"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
        tok["model"]["merges"] = pairs
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    config = {"bos_token": "<s>", "eos_token": "</s>", "legacy": layout == "legacy"}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config))
    return out_dir / "tokenizer.json"


if __name__ == "__main__":
    print(convert(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "legacy"))


def _bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def convert_tekken(tekken_path, out_dir):
    """A byte-level BPE tokenizer.json for a tekken.json, in the layout of transformers'
    convert_tekken_tokenizer (Split by the tekken regex, ByteLevel, ignore_merges), merges
    recovered from the ranks as tiktoken converters do."""
    import base64

    data = json.loads(Path(tekken_path).read_text())
    num_special = data["config"]["default_num_special_tokens"]
    inner = data["config"]["default_vocab_size"] - num_special
    ranks = {base64.b64decode(t["token_bytes"]): t["rank"] for t in data["vocab"][:inner]}
    b2u = _bytes_to_unicode()

    def as_str(b):
        return "".join(b2u[x] for x in b)

    def split_of(token, rank):
        parts = [bytes([b]) for b in token]
        while True:
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                return parts
            i = best[1]
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]

    merges = []
    for token, rank in sorted(ranks.items(), key=lambda x: x[1]):
        if len(token) > 1:
            parts = split_of(token, rank)
            if len(parts) == 2:
                merges.append([as_str(parts[0]), as_str(parts[1])])
    vocab = {as_str(b): r + num_special for b, r in ranks.items()}
    specials = [t["token_str"] for t in data.get("special_tokens") or []] or [
        "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
        "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]",
        "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]"]
    specials += [f"<SPECIAL_{i}>" for i in range(len(specials), num_special)]
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, s in enumerate(specials)]
    for s in specials:
        vocab[s] = specials.index(s)
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
           "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
               {"type": "Split", "pattern": {"Regex": data["config"]["pattern"]}, "behavior": "Isolated",
                "invert": False},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
           "post_processor": None,
           "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                     "vocab": vocab, "merges": merges}}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    return out_dir / "tokenizer.json"
