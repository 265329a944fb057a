#!/usr/bin/env python3
"""Quantization quality, ours against llama.cpp's, on the same weights and the same prompts.

KL(P_bf16 || P_quant) in nats per position (averaged; also the 99th percentile and max) and top-1
agreement, for
  ours int8 / int4 (`mistral logits --weights int8|int4`)  against ours bf16,
  llama.cpp Q8_0 / Q4_0 (llama_model_quantize defaults)    against llama.cpp BF16,
and KL(ours bf16 || llama.cpp BF16) as a cross-check of the two engines on the unquantized weights.
Prompts: --prompts rows of --prompt-len random token ids (fixed seed, away from the special ids),
every position scored (llama.cpp with logits for every token of the batch, KV cache in F32).

Usage: quant_quality.py [--model /tmp/m7b] [--work /tmp/llbench]   (GGUFs made there if missing)
Our binary: $MISTRAL_BIN (default build/apps/cli/mistral under the repository root).
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from bench_vs_llamacpp import ensure_gguf, gguf_info, log, versions  # noqa: E402
from compare import kl_stats, read_our_logits  # noqa: E402


def our_logits(mistral, model, weights, inp, out, threads):
    cmd = [mistral, "logits", "--model", model, "--input", inp, "--out", out,
           "--threads", str(threads)]
    if weights:
        cmd += ["--weights", weights]
    log("+ " + " ".join(cmd))
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        return None, (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]
    return read_our_logits(out), None


def llama_logits(gguf_path, inp, out, threads, kv_type):
    cmd = [sys.executable, os.path.join(HERE, "llama_runner.py"), "logits", "--model", gguf_path,
           "--input", inp, "--out", out, "--threads", str(threads), "--kv-type", kv_type]
    log("+ " + " ".join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return np.load(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("MODEL_DIR", "/tmp/m7b"))
    ap.add_argument("--work", default=os.environ.get("WORK_DIR", "/tmp/llbench"))
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kv-type", default="f32", choices=["f32", "f16"])
    ap.add_argument("--quants", default="q8_0,q4_0")
    a = ap.parse_args()
    mistral = os.environ.get("MISTRAL_BIN", os.path.join(ROOT, "build", "apps", "cli", "mistral"))
    quants = [q for q in a.quants.split(",") if q]
    ours_flag = {"q8_0": "int8", "q4_0": "int4"}
    d = os.path.join(a.work, "quality")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)

    ids = np.random.default_rng(a.seed).integers(3, cfg["vocab_size"],
                                                 size=(a.prompts, a.prompt_len)).tolist()
    inp = os.path.join(d, "ids.json")
    with open(inp, "w") as f:
        json.dump({"input_ids": ids, "attention_mask": [[1] * a.prompt_len] * a.prompts}, f)

    # One engine at a time; only the logits stay in memory (4 x 64 x 32000 F32 = 33 MB each).
    ours, ours_err = {}, {}
    for q in [None] + [ours_flag[q] for q in quants]:
        key = q or "bf16"
        ours[key], ours_err[key] = our_logits(mistral, a.model, q, inp,
                                              os.path.join(d, f"ours-{key}.safetensors"), a.threads)
        if ours_err[key]:
            log(f"ours {key}: {ours_err[key]}")
    llama = {}
    ggufs = {}
    for fmt in ["bf16"] + quants:
        ggufs[fmt] = ensure_gguf(fmt, a.model, a.work, a.threads, cfg["num_hidden_layers"])
        llama[fmt] = llama_logits(ggufs[fmt], inp, os.path.join(d, f"llama-{fmt}.npy"), a.threads,
                                  a.kv_type)

    rows = []
    for q in quants:
        key = ours_flag[q]
        if ours["bf16"] is not None and ours[key] is not None:
            rows.append((f"ours {key}", "ours bf16", kl_stats(ours["bf16"], ours[key])))
        else:
            rows.append((f"ours {key}", "ours bf16", {"error": ours_err[key] or ours_err["bf16"]}))
        rows.append((f"llama.cpp {q.upper()}", "llama.cpp BF16", kl_stats(llama["bf16"], llama[q])))
    if ours["bf16"] is not None:
        rows.append(("llama.cpp BF16", "ours bf16", kl_stats(ours["bf16"], llama["bf16"])))

    quant_types = {q: gguf_info(ggufs[q])["embedding_and_output"] for q in quants}
    print(f"Prompts: {a.prompts} x {a.prompt_len} random ids (seed {a.seed}), "
          f"{a.prompts * a.prompt_len} positions; model {a.model}; llama.cpp KV cache {a.kv_type}.")
    print("\n| quantized (Q) | reference (P) | KL(P‖Q) mean | KL p99 | KL max | top-1 agreement |")
    print("|---|---|---|---|---|---|")
    for name, ref, s in rows:
        if "error" in s:
            print(f"| {name} | {ref} | – | – | – | – ({s['error']}) |")
        else:
            print(f"| {name} | {ref} | {s['kl_mean']:.3e} | {s['kl_p99']:.3e} | "
                  f"{s['kl_max']:.3e} | {s['top1']:.4f} |")
    for q, t in quant_types.items():
        print(f"\nllama.cpp {q.upper()} keeps " + ", ".join(f"{k} as {v}" for k, v in sorted(t.items())))
    out = os.path.join(d, "quality.json")
    with open(out, "w") as f:
        json.dump({"versions": versions(mistral), "model": a.model, "prompts": a.prompts,
                   "prompt_len": a.prompt_len, "seed": a.seed, "kv_type": a.kv_type,
                   "rows": [{"quantized": n, "reference": r, **s} for n, r, s in rows],
                   "llama_quant_types": quant_types}, f, indent=2)
    print(f"\nRaw numbers: {out}")


if __name__ == "__main__":
    main()
