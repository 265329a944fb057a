#!/usr/bin/env python3
"""Checks hf_to_gguf.py: the GGUF must hold the checkpoint's tensors (q/k rows permuted) and
llama.cpp's logits on it must equal ours on the original checkpoint. Exits non-zero on a mismatch.

Cases (random-weight checkpoints written by `mistral random-checkpoint`, then converted); a case
"NAME:f32" converts NAME's checkpoint to an F32 GGUF instead of its own dtype:
  tiny           --preset tiny, F32: GQA 8/2 heads, head_dim 16, rope_theta 1e6.
  odd            F32, a config.json of its own: MHA, head_dim 32 != hidden/heads, tied
                 embeddings, vocab 300 (too small for the 256 byte pieces).
  wide           F32 (--wide): the Mistral-7B shape cut to 2 layers (32/8 heads of 128, ffn
                 14336, vocab 32000), 2.8 GB; the q/k permutation at the real head sizes.
  wide-bf16:f32  (--wide) the same shape stored in BF16, converted to an F32 GGUF (exact widening):
                 must match our engine on the checkpoint widened to F32 at load (--dtype f32).
  wide-bf16      (--wide) the BF16 checkpoint as a BF16 GGUF.
  7b             BF16 (--model-7b DIR): the full random 7B as it is stored, 8 tokens.
Every case compares each GGUF tensor with the checkpoint's, bit for bit. Logits: F32 GGUFs must
agree within --tol (1e-4) of the logit scale (max |logit|), llama.cpp with its KV cache in F32 and
flash attention off (its CPU flash-attention path computes in F16). BF16 GGUFs are not
bit-comparable in logits: both engines round activations to BF16 before every BF16 matmul (ggml's
vec_dot type for BF16; ours since the vdpbf16ps kernels, backend.h) but sum in different orders
and round different intermediate tensors, so they get looser bounds (--tol-bf16 on the logits,
--kl-bf16 on the mean KL).

Usage: check_conversion.py [--work /tmp/llcheck] [--wide] [--model-7b /tmp/m7b
                           [--gguf-7b /tmp/llbench/model-bf16.gguf]]
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
from compare import kl_stats, read_our_logits  # noqa: E402
import gguf  # noqa: E402
from hf_to_gguf import Checkpoint, gguf_name, permute_rotary_rows, to_f32  # noqa: E402


def mistral_bin():
    return os.environ.get("MISTRAL_BIN", os.path.join(ROOT, "build", "apps", "cli", "mistral"))


def run(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, check=True, **kw)


ODD_CONFIG = {
    "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_act": "silu",
    "vocab_size": 300, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 32,
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "sliding_window": None, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
    "torch_dtype": "float32",
}


CASE_DTYPE = {"tiny": "f32", "odd": "f32", "wide": "f32", "wide-bf16": "bf16", "7b": "bf16"}


def make_checkpoint(case, d, model_7b):
    if case == "7b":
        return model_7b
    ckpt = os.path.join(d, "ckpt")
    if os.path.exists(os.path.join(ckpt, "config.json")):
        return ckpt
    cmd = [mistral_bin(), "random-checkpoint", "--dtype", CASE_DTYPE[case], "--out", ckpt]
    if case == "tiny":
        cmd += ["--preset", "tiny", "--seed", "1"]
    elif case == "odd":
        os.makedirs(d, exist_ok=True)
        cfg = os.path.join(d, "config.in.json")
        with open(cfg, "w") as f:
            json.dump(ODD_CONFIG, f)
        cmd += ["--config", cfg, "--seed", "2", "--std", "0.05"]
    elif case in ("wide", "wide-bf16"):
        cmd += ["--preset", "7b", "--layers", "2", "--seed", "3"]
    run(cmd)
    return ckpt


def verify_tensors(ckpt_dir, gguf_path):
    """Every GGUF tensor against the checkpoint's, bit for bit where the type is the checkpoint's
    (q/k rows permuted): the BF16 path copies the bits, so a BF16 GGUF must hold them exactly.
    Returns (tensors compared, names that differ)."""
    ckpt = Checkpoint(ckpt_dir)
    cfg = ckpt.config
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])
    by_name = {t.name: t for t in gguf.GGUFReader(gguf_path).tensors}
    n_heads = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_heads)
    bad = []
    names = [n for n in ckpt.names() if not n.endswith("rotary_emb.inv_freq")]
    for n in names:
        t = by_name.get(gguf_name(tmap, n))
        src = ckpt.array(n)
        if n.endswith("q_proj.weight"):
            src = permute_rotary_rows(src, n_heads)
        elif n.endswith("k_proj.weight"):
            src = permute_rotary_rows(src, n_kv)
        if t is None:
            bad.append(n)
        elif t.tensor_type == gguf.GGMLQuantizationType.BF16 and ckpt.dtype(n) == "BF16":
            if not np.array_equal(np.asarray(t.data).view(np.uint16).reshape(src.shape), src):
                bad.append(n)
        elif t.tensor_type == gguf.GGMLQuantizationType.F32:
            if not np.array_equal(np.asarray(t.data).reshape(src.shape), to_f32(src, ckpt.dtype(n))):
                bad.append(n)
    if len(by_name) != len(names):
        bad.append(f"GGUF has {len(by_name)} tensors, checkpoint {len(names)}")
    return len(names), bad


def check_case(spec, work, model_7b, args):
    case, _, outtype = spec.partition(":")
    outtype = outtype or CASE_DTYPE[case]
    d = os.path.join(work, case)
    os.makedirs(d, exist_ok=True)
    ckpt = make_checkpoint(case, d, model_7b)
    with open(os.path.join(ckpt, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    gg = os.path.join(d, f"model-{outtype}.gguf")
    if case == "7b" and args.gguf_7b:
        gg = args.gguf_7b
    if not os.path.exists(gg):
        run([sys.executable, os.path.join(HERE, "hf_to_gguf.py"), ckpt, gg, "--outtype", outtype])
    n_checked, bad = verify_tensors(ckpt, gg)
    if bad:
        print(f"{case}: tensors differ from the checkpoint: {bad[:5]}", file=sys.stderr)
    rows, seq = (1, 8) if case == "7b" else (2, 40)
    rng = np.random.default_rng(7)
    ids = rng.integers(3, vocab, size=(rows, seq)).tolist()
    inp = os.path.join(d, "ids.json")
    with open(inp, "w") as f:
        json.dump({"input_ids": ids, "attention_mask": [[1] * seq] * rows}, f)
    ours_path = os.path.join(d, "ours.safetensors")
    # An F32 GGUF of BF16 weights is compared with our engine on the weights widened to F32: on
    # BF16 weights ours rounds each matmul's activations to BF16, as llama.cpp's BF16 path does.
    widen = ["--dtype", "f32"] if outtype == "f32" and CASE_DTYPE[case] != "f32" else []
    run([mistral_bin(), "logits", "--model", ckpt, "--input", inp, "--out", ours_path,
         "--threads", str(args.threads)] + widen)
    ll_path = os.path.join(d, "llama.npy")
    run([sys.executable, os.path.join(HERE, "llama_runner.py"), "logits", "--model", gg,
         "--input", inp, "--out", ll_path, "--threads", str(args.threads), "--kv-type", "f32",
         "--flash-attn", args.flash_attn], stdout=subprocess.DEVNULL)
    ours = read_our_logits(ours_path)
    ll = np.load(ll_path)
    if ours.shape != ll.shape:
        raise SystemExit(f"{case}: shapes differ, ours {ours.shape} llama.cpp {ll.shape}")
    scale = float(np.abs(ours).max())
    rel = float(np.abs(ours - ll).max()) / scale
    s = kl_stats(ours, ll)
    tol = args.tol_bf16 if outtype == "bf16" else args.tol
    ok = rel <= tol and not bad and (outtype != "bf16" or s["kl_mean"] <= args.kl_bf16)
    return {"case": spec, "gguf": outtype, "shape": list(ours.shape), "logit_scale": scale,
            "max_abs_diff_rel": rel, "tol": tol, "kl_mean": s["kl_mean"], "top1": s["top1"],
            "tensors": f"{n_checked - len(bad)}/{n_checked}", "ok": ok}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/llcheck")
    ap.add_argument("--cases", default="tiny,odd")
    ap.add_argument("--wide", action="store_true", help="add the 2-layer 7B-shape cases")
    ap.add_argument("--model-7b", default=None, help="add the BF16 7B case on this checkpoint")
    ap.add_argument("--gguf-7b", default=None,
                    help="an existing BF16 GGUF of --model-7b (e.g. the benchmark's), not rewritten")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--tol-bf16", type=float, default=5e-2)
    ap.add_argument("--kl-bf16", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flash-attn", default="off", choices=["auto", "on", "off"],
                    help="llama.cpp's CPU flash attention rounds to F16 (1e-3 relative differences)")
    args = ap.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    if args.wide:
        cases += ["wide", "wide-bf16:f32", "wide-bf16"]
    if args.model_7b:
        cases.append("7b")
    results = [check_case(c, args.work, args.model_7b, args) for c in cases]
    print("| case | GGUF | tensors exact | logits shape | logit scale | max abs diff / scale | tol | "
          "KL(ours‖llama.cpp) | top-1 agree | ok |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['case']} | {r['gguf']} | {r['tensors']} | {r['shape']} | {r['logit_scale']:.4g} | "
              f"{r['max_abs_diff_rel']:.2e} | {r['tol']:.0e} | {r['kl_mean']:.2e} | "
              f"{r['top1']:.3f} | {'yes' if r['ok'] else 'NO'} |")
    if not all(r["ok"] for r in results):
        print("conversion check FAILED", file=sys.stderr)
        sys.exit(1)
    print("conversion check passed", file=sys.stderr)


if __name__ == "__main__":
    main()
