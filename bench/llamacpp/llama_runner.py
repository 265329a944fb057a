#!/usr/bin/env python3
"""llama.cpp, driven through llama-cpp-python's low-level C API (no Python-side sampling or
caching in the way): a model and one context, all-position logits, a batch-1 speed benchmark, and
quantization. One engine per process; the subcommands print JSON so that callers can run each
engine in its own process (peak RSS is per process, and two 7B engines never share RAM).

  llama_runner.py bench    --model M.gguf [--prompt-tokens 64] [--new-tokens 32] [--threads 2]
                           [--repeats 2] [--warmup 1] [--seed 0]
  llama_runner.py logits   --model M.gguf --input IN.json --out OUT.npy [--threads 2]
  llama_runner.py quantize IN.gguf OUT.gguf --type q8_0|q4_0 [--threads 2]
  llama_runner.py info     M.gguf            # tensor types and bytes of a GGUF file
"""
import argparse
import ctypes
import json
import logging
import os
import resource
import sys
import time

import numpy as np

import llama_cpp

GGML_TYPES = {"f32": llama_cpp.GGML_TYPE_F32, "f16": llama_cpp.GGML_TYPE_F16}
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}


def set_verbose(verbose):
    logging.getLogger("llama-cpp-python").setLevel(logging.DEBUG if verbose else logging.ERROR)


class LlamaCpp:
    """A llama.cpp model and one context of n_ctx positions on the CPU."""

    def __init__(self, model_path, threads=2, n_ctx=512, n_batch=512, kv_type=None,
                 flash_attn="auto"):
        llama_cpp.llama_backend_init()
        mp = llama_cpp.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = llama_cpp.llama_model_load_from_file(model_path.encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {model_path}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = n_batch
        cp.n_seq_max = 1
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.flash_attn_type = FLASH_ATTN[flash_attn]
        if kv_type is not None:
            cp.type_k = GGML_TYPES[kv_type]
            cp.type_v = GGML_TYPES[kv_type]
        cp.no_perf = False
        self.ctx = llama_cpp.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.params = {"n_ctx": n_ctx, "n_batch": n_batch, "threads": threads,
                       "kv_type": kv_type or "default (f16)", "flash_attn": flash_attn}
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.n_batch = n_batch

    def close(self):
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)

    def clear(self):
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)

    def decode(self, tokens, pos0, all_logits=False):
        """Appends tokens at positions pos0.. to sequence 0; logits for every position or the last."""
        n = len(tokens)
        if n > self.n_batch:
            raise ValueError(f"{n} tokens exceed n_batch {self.n_batch}")
        b = self.batch
        b.n_tokens = n
        for i, t in enumerate(tokens):
            b.token[i] = int(t)
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1 if (all_logits or i == n - 1) else 0
        rc = llama_cpp.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        llama_cpp.llama_synchronize(self.ctx)

    def last_logits(self):
        p = llama_cpp.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(p, shape=(self.n_vocab,))

    def logits(self, tokens):
        """[len(tokens), vocab] float32 logits of one sequence from an empty cache."""
        self.clear()
        self.decode(tokens, 0, all_logits=True)
        p = llama_cpp.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(p, shape=(len(tokens), self.n_vocab)).copy()

    def perf(self):
        d = llama_cpp.llama_perf_context(self.ctx)
        return {"t_p_eval_ms": d.t_p_eval_ms, "n_p_eval": d.n_p_eval,
                "t_eval_ms": d.t_eval_ms, "n_eval": d.n_eval}

    def run_once(self, prompt, new_tokens):
        """Prefill of the prompt as one batch, then new_tokens greedy single-token decode steps
        (the first from the prefill's logits), each llama_decode + llama_synchronize timed as
        llama-bench does. Times from llama.cpp's perf counters and from the wall clock."""
        self.clear()
        llama_cpp.llama_perf_context_reset(self.ctx)
        t0 = time.perf_counter()
        self.decode(prompt, 0)
        t1 = time.perf_counter()
        pos = len(prompt)
        decode_wall = 0.0
        for _ in range(new_tokens):
            tok = int(np.argmax(self.last_logits()))
            t2 = time.perf_counter()
            self.decode([tok], pos)
            decode_wall += time.perf_counter() - t2
            pos += 1
        perf = self.perf()
        if perf["n_p_eval"] != len(prompt) or perf["n_eval"] != new_tokens:
            raise RuntimeError(f"perf counters counted {perf}, expected {len(prompt)} prompt "
                               f"and {new_tokens} generated tokens")
        return {"prefill_s": perf["t_p_eval_ms"] / 1e3, "decode_s": perf["t_eval_ms"] / 1e3,
                "prefill_wall_s": t1 - t0, "decode_wall_s": decode_wall}


def random_prompt(n, vocab, seed):
    """Random ids away from the special tokens <unk>, <s>, </s>."""
    return np.random.default_rng(seed).integers(3, vocab, size=n).tolist()


def gguf_info(path):
    """Tensor count, bytes of tensor data, and how many tensors / bytes of each GGML type."""
    import gguf
    r = gguf.GGUFReader(path)
    by_type = {}
    total = 0
    for t in r.tensors:
        name = t.tensor_type.name
        c, b = by_type.get(name, (0, 0))
        by_type[name] = (c + 1, b + int(t.n_bytes))
        total += int(t.n_bytes)
    special = {t.name: t.tensor_type.name for t in r.tensors
               if t.name in ("token_embd.weight", "output.weight")}
    ft = r.fields.get("general.file_type")
    file_type = int(ft.parts[ft.data[0]][0]) if ft is not None else None
    return {"path": path, "file_bytes": os.path.getsize(path), "tensor_bytes": total,
            "n_tensors": len(r.tensors), "file_type": file_type,
            "types": {k: {"tensors": c, "bytes": b} for k, (c, b) in sorted(by_type.items())},
            "embedding_and_output": special}


def cmd_bench(a):
    set_verbose(a.verbose)
    t_load = time.perf_counter()
    eng = LlamaCpp(a.model, threads=a.threads, n_ctx=a.prompt_tokens + a.new_tokens + 16,
                   n_batch=max(a.prompt_tokens, 32), flash_attn=a.flash_attn)
    load_s = time.perf_counter() - t_load
    prompt = random_prompt(a.prompt_tokens, eng.n_vocab, a.seed)
    for _ in range(a.warmup):
        eng.run_once(prompt, a.warmup_new_tokens)
    runs = [eng.run_once(prompt, a.new_tokens) for _ in range(a.repeats)]
    eng.close()
    med = lambda k: float(np.median([r[k] for r in runs]))  # noqa: E731
    out = {
        "engine": "llama.cpp", "model": a.model, "threads": a.threads,
        "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens,
        "warmup": a.warmup, "repeats": a.repeats, "context": eng.params, "load_s": load_s,
        "prefill_tok_s": a.prompt_tokens / med("prefill_s"),
        "decode_tok_s": a.new_tokens / med("decode_s"),
        "prefill_tok_s_wall": a.prompt_tokens / med("prefill_wall_s"),
        "decode_tok_s_wall": a.new_tokens / med("decode_wall_s"),
        "runs": [{"prefill_tok_s": a.prompt_tokens / r["prefill_s"],
                  "decode_tok_s": a.new_tokens / r["decode_s"]} for r in runs],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "llama_cpp_python": llama_cpp.__version__,
    }
    print(json.dumps(out, indent=2))


def cmd_logits(a):
    set_verbose(a.verbose)
    with open(a.input) as f:
        inp = json.load(f)
    ids = inp["input_ids"]
    mask = inp.get("attention_mask") or [[1] * len(r) for r in ids]
    if any(any(m != 1 for m in row) for row in mask):
        raise ValueError("padded rows are not supported here; give unpadded prompts of one length")
    eng = LlamaCpp(a.model, threads=a.threads, n_ctx=max(len(r) for r in ids) + 16,
                   n_batch=max(len(r) for r in ids), kv_type=a.kv_type, flash_attn=a.flash_attn)
    out = np.stack([eng.logits(r) for r in ids])
    eng.close()
    np.save(a.out, out)
    print(json.dumps({"out": a.out, "shape": list(out.shape), "context": eng.params}))


QUANT_TYPES = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0}


def cmd_quantize(a):
    set_verbose(a.verbose)
    p = llama_cpp.llama_model_quantize_default_params()
    p.nthread = a.threads
    p.ftype = QUANT_TYPES[a.type]
    tmp = a.out + ".partial"
    t0 = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(a.inp.encode(), tmp.encode(), ctypes.byref(p))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize returned {rc}")
    os.replace(tmp, a.out)
    info = gguf_info(a.out)
    info["quantize_s"] = time.perf_counter() - t0
    print(json.dumps(info, indent=2))


def cmd_info(a):
    print(json.dumps(gguf_info(a.path), indent=2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verbose", action="store_true", help="show llama.cpp's log")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--model", required=True)
    b.add_argument("--prompt-tokens", type=int, default=64)
    b.add_argument("--new-tokens", type=int, default=32)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--repeats", type=int, default=2)
    b.add_argument("--warmup", type=int, default=1)
    b.add_argument("--warmup-new-tokens", type=int, default=4)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--flash-attn", choices=FLASH_ATTN, default="auto")
    b.set_defaults(fn=cmd_bench)
    lg = sub.add_parser("logits")
    lg.add_argument("--model", required=True)
    lg.add_argument("--input", required=True)
    lg.add_argument("--out", required=True)
    lg.add_argument("--threads", type=int, default=2)
    lg.add_argument("--kv-type", choices=GGML_TYPES, default="f32")
    # llama.cpp's CPU flash-attention path computes in F16 even with an F32 KV cache (logits
    # 1e-3 off an F32 reference instead of 4e-7), so all-position logits default to without it.
    lg.add_argument("--flash-attn", choices=FLASH_ATTN, default="off")
    lg.set_defaults(fn=cmd_logits)
    q = sub.add_parser("quantize")
    q.add_argument("inp")
    q.add_argument("out")
    q.add_argument("--type", choices=QUANT_TYPES, required=True)
    q.add_argument("--threads", type=int, default=2)
    q.set_defaults(fn=cmd_quantize)
    i = sub.add_parser("info")
    i.add_argument("path")
    i.set_defaults(fn=cmd_info)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
