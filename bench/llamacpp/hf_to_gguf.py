#!/usr/bin/env python3
"""Writes a GGUF file (llama.cpp's "llama" architecture) from a Hugging Face MistralForCausalLM
checkpoint: config.json + model.safetensors or shards listed in model.safetensors.index.json.

What llama.cpp's convert_hf_to_gguf.py does for MistralForCausalLM (LlamaModel), written again for
this benchmark so that it runs without torch and streams tensor by tensor from memory maps (the 7B
checkpoint is 14.5 GB on a 24 GB machine):
  - tensor names mapped to GGUF's (token_embd, blk.N.attn_q, ..., output_norm, output);
  - q_proj / k_proj rows permuted from transformers' rotate-half RoPE layout (within each head,
    the first half of the rows holds the real parts, the second half the imaginary parts) back to
    the interleaved pairs that llama.cpp's LLAMA_ROPE_TYPE_NORM rotates: new row 2*i + p of a head
    is old row p * head_dim/2 + i;
  - 1-D tensors (the RMSNorm weights) stored as F32, matrices in the requested type;
  - hyperparameters: context length, embedding / feed-forward length, head counts, head_dim as
    key/value length and rope dimension, rope_theta, rms_norm_eps, vocab size, file type.
    config.json's sliding_window is not written: llama.cpp's llama architecture has no sliding
    window, so it attends to the whole context (the same as Mistral's for contexts up to the
    window, 4096 for Mistral-7B-v0.1, far beyond what the benchmark uses).
  - a tokenizer: llama.cpp refuses a model without one. A random-weight checkpoint has none, so a
    minimal SentencePiece ("llama") vocabulary of vocab_size entries is written: <unk>, <s>, </s>,
    the 256 byte-fallback pieces <0x00>..<0xFF> when they fit, then distinct dummy pieces. It is
    only there to be loaded; the benchmark feeds token ids, never text.

Usage: hf_to_gguf.py CHECKPOINT_DIR OUT.gguf [--outtype f32|f16|bf16|auto]
"auto" keeps the checkpoint's dtype (bf16 stays bf16, f32 stays f32).
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np

import gguf

_ST_DTYPES = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}
_ELEM = {"BF16": 2, "F16": 2, "F32": 4}


class SafetensorsFile:
    """One .safetensors file, its tensors as numpy views of a read-only memory map (BF16 as raw
    uint16). Strict about the header: offsets must tile the data section."""

    def __init__(self, path):
        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError(f"{path}: header length {n} past the end of the file")
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        self.data_start = 8 + n
        self.tensors = {}
        end = 0
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            dtype = info["dtype"]
            if dtype not in _ST_DTYPES:
                raise ValueError(f"{path}: tensor {name}: dtype {dtype} not supported")
            begin, stop = info["data_offsets"]
            count = int(np.prod(info["shape"])) if info["shape"] else 1
            if begin != end or stop - begin != count * _ELEM[dtype]:
                raise ValueError(f"{path}: tensor {name}: bad data_offsets {info['data_offsets']}")
            end = stop
            self.tensors[name] = (dtype, tuple(info["shape"]), begin)
        if self.data_start + end != size:
            raise ValueError(f"{path}: data section is {size - self.data_start} bytes, tensors {end}")

    def dtype(self, name):
        return self.tensors[name][0]

    def shape(self, name):
        return self.tensors[name][1]

    def array(self, name):
        dtype, shape, begin = self.tensors[name]
        return np.memmap(self.path, dtype=_ST_DTYPES[dtype], mode="r",
                         offset=self.data_start + begin, shape=shape)


class Checkpoint:
    """config.json and the tensors of a Hugging Face checkpoint directory, by name."""

    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.config = json.load(f)
        index = os.path.join(model_dir, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            files = {shard: SafetensorsFile(os.path.join(model_dir, shard))
                     for shard in sorted(set(weight_map.values()))}
            self.where = {name: files[shard] for name, shard in weight_map.items()}
            for name, st in self.where.items():
                if name not in st.tensors:
                    raise ValueError(f"{index}: {name} is not in {st.path}")
        else:
            st = SafetensorsFile(os.path.join(model_dir, "model.safetensors"))
            self.where = {name: st for name in st.tensors}

    def names(self):
        return list(self.where)

    def dtype(self, name):
        return self.where[name].dtype(name)

    def shape(self, name):
        return self.where[name].shape(name)

    def array(self, name):
        return self.where[name].array(name)


def to_f32(a, st_dtype):
    if st_dtype == "BF16":
        return (np.asarray(a, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(a, dtype=np.float32)


def f32_to_bf16(x):
    """Round to nearest even, as torch's .to(torch.bfloat16); refuses non-finite values."""
    if not np.all(np.isfinite(x)):
        raise ValueError("non-finite weight")
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16).astype(np.uint16)


def permute_rotary_rows(w, n_heads):
    """Rotate-half (Hugging Face) to interleaved (llama.cpp) row order within each head."""
    rows = w.shape[0]
    head_dim = rows // n_heads
    return (np.asarray(w).reshape(n_heads, 2, head_dim // 2, *w.shape[1:])
            .transpose(0, 2, 1, *range(3, w.ndim + 2)).reshape(w.shape))


def minimal_spm_vocab(vocab_size):
    """Tokens, scores and types of a loadable SentencePiece vocabulary of exactly vocab_size."""
    if vocab_size < 3:
        raise ValueError("vocab_size must be at least 3 (<unk>, <s>, </s>)")
    tokens = [b"<unk>", b"<s>", b"</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    if vocab_size >= 3 + 256:
        tokens += [f"<0x{b:02X}>".encode() for b in range(256)]
        types += [gguf.TokenType.BYTE] * 256
    i = 0
    while len(tokens) < vocab_size:
        tokens.append(f"\u2581t{i}".encode())
        types.append(gguf.TokenType.NORMAL)
        i += 1
    scores = [0.0] * 3 + [-float(k) for k in range(vocab_size - 3)]
    return tokens, scores, [int(t) for t in types]


def gguf_name(tmap, hf_name):
    name = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise ValueError(f"no GGUF name for tensor {hf_name}")
    return name


def convert(model_dir, out_path, outtype="auto", log=print):
    ckpt = Checkpoint(model_dir)
    cfg = ckpt.config
    arch = (cfg.get("architectures") or ["MistralForCausalLM"])[0]
    if arch not in ("MistralForCausalLM", "LlamaForCausalLM"):
        raise ValueError(f"{model_dir}/config.json: architecture {arch} not supported")
    n_layers = cfg["num_hidden_layers"]
    n_heads = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_heads)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_heads
    rope_theta = cfg.get("rope_theta")
    if rope_theta is None:
        rope_theta = (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    rope_type = (cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}).get("rope_type")
    if rope_type not in (None, "default"):
        raise ValueError(f"rope scaling {rope_type} not supported by this converter")

    names = [n for n in ckpt.names() if not n.endswith("rotary_emb.inv_freq")]
    src_dtypes = {ckpt.dtype(n) for n in names}
    if outtype == "auto":
        outtype = {"BF16": "bf16", "F16": "f16", "F32": "f32"}[
            "F32" if "F32" in src_dtypes else sorted(src_dtypes)[0]]
    out_ggml = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
                "bf16": gguf.GGMLQuantizationType.BF16}[outtype]
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16}[outtype]

    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    # llama.cpp's converter writes the token embedding first and the output head last.
    order = {"model.embed_tokens.weight": -1, "model.norm.weight": 1 << 30,
             "lm_head.weight": (1 << 30) + 1}

    def sort_key(n):
        if n in order:
            return (order[n], n)
        parts = n.split(".")
        return (int(parts[2]) if parts[:2] == ["model", "layers"] else 1 << 29, n)

    names.sort(key=sort_key)

    w = gguf.GGUFWriter(out_path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    w.add_name(os.path.basename(os.path.abspath(model_dir)))
    w.add_block_count(n_layers)
    w.add_context_length(cfg.get("max_position_embeddings", 32768))
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(float(rope_theta))
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_vocab_size(cfg["vocab_size"])
    w.add_rope_dimension_count(head_dim)
    w.add_file_type(int(file_type))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tokens, scores, types = minimal_spm_vocab(cfg["vocab_size"])
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    bos = cfg.get("bos_token_id", 1)
    eos = cfg.get("eos_token_id", 2)
    w.add_bos_token_id(bos if isinstance(bos, int) else 1)
    w.add_eos_token_id(eos if isinstance(eos, int) else eos[0])
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    plan = []
    for n in names:
        shape = ckpt.shape(n)
        kind = out_ggml if len(shape) >= 2 else gguf.GGMLQuantizationType.F32
        np_dtype = {gguf.GGMLQuantizationType.F32: np.float32,
                    gguf.GGMLQuantizationType.F16: np.float16,
                    gguf.GGMLQuantizationType.BF16: np.uint16}[kind]
        nbytes = int(np.prod(shape)) * np.dtype(np_dtype).itemsize
        raw = kind if kind == gguf.GGMLQuantizationType.BF16 else None
        w.add_tensor_info(gguf_name(tmap, n), shape, np.dtype(np_dtype), nbytes, raw_dtype=raw)
        plan.append((n, kind))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    t0 = time.time()
    for i, (n, kind) in enumerate(plan):
        src = ckpt.array(n)
        st_dtype = ckpt.dtype(n)
        if n.endswith("q_proj.weight"):
            src = permute_rotary_rows(src, n_heads)
        elif n.endswith("k_proj.weight"):
            src = permute_rotary_rows(src, n_kv)
        if kind == gguf.GGMLQuantizationType.BF16 and st_dtype == "BF16":
            data = np.asarray(src, dtype=np.uint16)  # no rounding: the bits go through as they are
        elif kind == gguf.GGMLQuantizationType.BF16:
            data = f32_to_bf16(to_f32(src, st_dtype))
        elif kind == gguf.GGMLQuantizationType.F16:
            f = to_f32(src, st_dtype)
            if np.abs(f).max() > 65504:
                raise ValueError(f"{n}: values beyond F16's range; use --outtype bf16")
            data = f.astype(np.float16)
        else:
            data = to_f32(src, st_dtype)
        w.write_tensor_data(np.ascontiguousarray(data))
        del data, src
        if (i + 1) % 16 == 0 or i + 1 == len(plan):
            log(f"  {i + 1}/{len(plan)} tensors, {time.time() - t0:.0f} s")
    w.close()
    return outtype


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--outtype", default="auto", choices=["auto", "f32", "f16", "bf16"])
    args = ap.parse_args()
    tmp = args.out + ".partial"
    outtype = convert(args.model_dir, tmp, args.outtype, log=lambda s: print(s, file=sys.stderr))
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({outtype}, {os.path.getsize(args.out) / 1e9:.2f} GB)", file=sys.stderr)


if __name__ == "__main__":
    main()
