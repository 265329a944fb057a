#!/usr/bin/env python3
"""Hugging Face transformers (bf16, one GPU) under the protocol of `mistral bench`.

B random prompts of P tokens; the time to first token is a generate() of one new token (prefill
plus one greedy step); decode is a generate() of N+1 new tokens with min_new_tokens forcing all
of them, minus that first-token time, so decode_tok_s = B * N / (t_total - t_first). Greedy, the
default (dynamic) KV cache and attention implementation. Each run draws new prompts; the best run
is reported, and the first run apart. Prints one JSON object.

  hf_bench.py MODEL_DIR [--batch B] [--prompt-tokens P] [--new-tokens N] [--runs R]
"""
import argparse
import json
import time

import torch
import transformers
from transformers import AutoModelForCausalLM


def timed_generate(model, ids, new_tokens):
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    torch.cuda.synchronize()
    assert out.shape[1] == ids.shape[1] + new_tokens, out.shape
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    load_start = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16)
    except TypeError:  # transformers < 4.56 names it torch_dtype
        model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.bfloat16)
    model = model.to("cuda").eval()
    load_s = time.perf_counter() - load_start
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(a.seed)
    runs = []
    for _ in range(a.runs):
        ids = torch.randint(3, vocab, (a.batch, a.prompt_tokens), generator=gen).to("cuda")
        first = timed_generate(model, ids, 1)
        total = timed_generate(model, ids, a.new_tokens + 1)
        runs.append({"ttft_s": first,
                     "prefill_tok_s": a.batch * a.prompt_tokens / first,
                     "decode_tok_s": a.batch * a.new_tokens / max(total - first, 1e-9)})
    best = max(runs, key=lambda r: r["decode_tok_s"])
    print(json.dumps({
        "engine": "transformers " + transformers.__version__ + ", torch " + torch.__version__,
        "device": torch.cuda.get_device_name(0),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "batch": a.batch, "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens,
        "runs": a.runs, "load_s": load_s,
        "prefill_tok_s": max(r["prefill_tok_s"] for r in runs),
        "time_to_first_token_s": min(r["ttft_s"] for r in runs),
        "decode_tok_s": best["decode_tok_s"],
        "first_run": runs[0],
    }, indent=2))


if __name__ == "__main__":
    main()
