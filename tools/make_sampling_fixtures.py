#!/usr/bin/env python3
"""Writes tests/sampling/fixtures.json: logits rows processed by Hugging Face's own logits processors.

Each case holds one row of raw logits, the token ids seen so far and a parameter set; `expected` is the
row after RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
TopPLogitsWarper and MinPLogitsWarper, each added under the same condition and in the same order as
transformers' `GenerationMixin._get_logits_processor` (sampling mode, min_tokens_to_keep=1).
-inf is written as null. Parameters are float32 values, because SamplingParams holds floats.

Cases whose outcome depends on float rounding (a top-p or min-p decision within 1e-5 of its
threshold) or on torch's unstable sort (a tie group split by the top-p cut in a row longer than 16,
where torch.sort stops being stable) are skipped: they are not a well-defined target.

Also writes the first outputs of SplitMix64-seeded xoshiro256** for a few seeds (transcribed from
the reference C code by Blackman and Vigna), which pins the sampler's random stream.

Deterministic: run `python3 tools/make_sampling_fixtures.py` and the same file comes out.
"""

import json
import math
import os

import numpy as np
import torch
import transformers
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "sampling", "fixtures.json")
MARGIN = 1e-5
MASK64 = (1 << 64) - 1


def f32(x):
    return float(np.float32(x))


def hf_processors(p):
    """Mirrors _get_logits_processor for do_sample=True, num_beams=1."""
    procs = LogitsProcessorList()
    if p["repetition_penalty"] != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(p["repetition_penalty"]))
    if p["temperature"] != 1.0:
        procs.append(TemperatureLogitsWarper(p["temperature"]))
    if p["top_k"] != 0:
        procs.append(TopKLogitsWarper(top_k=p["top_k"], min_tokens_to_keep=1))
    if p["top_p"] < 1.0:
        procs.append(TopPLogitsWarper(top_p=p["top_p"], min_tokens_to_keep=1))
    if p["min_p"] != 0.0:  # HF adds it whenever min_p is set; min_p=0 removes nothing.
        procs.append(MinPLogitsWarper(min_p=p["min_p"], min_tokens_to_keep=1))
    return procs


def ambiguous(penalized, p):
    """True when a top-p/min-p decision is too close to call in float32 arithmetic.

    `penalized` is the float32 row after the repetition penalty. Temperature and top-k are exact
    float32 operations, so they are redone in float32; the softmax sums are checked in float64.
    """
    x = penalized / p["temperature"]
    if p["top_k"] != 0:
        k = min(p["top_k"], x.numel())
        x = torch.where(x < torch.topk(x, k).values[-1], -math.inf, x)
    x = x.double()
    if p["top_p"] < 1.0 and torch.isfinite(x).any():
        vals, idx = torch.sort(x, stable=True)
        cum = vals.softmax(-1).cumsum(-1)
        thr = 1.0 - p["top_p"]
        gap = (cum[:-1] - thr).abs()
        if ((gap > 0) & (gap < MARGIN)).any():
            return True
        remove = torch.zeros_like(cum, dtype=torch.bool)
        remove[:-1] = cum[:-1] <= thr
        if x.numel() > 16:  # torch.sort is unstable here: a split tie group is undefined
            for v in torch.unique(vals[torch.isfinite(vals)]):
                group = remove[vals == v]
                if group.any() and not group.all():
                    return True
        mask = torch.zeros_like(remove)
        mask[idx] = remove
        x = x.masked_fill(mask, -math.inf)
    if p["min_p"] != 0.0 and torch.isfinite(x).any():
        rel = torch.exp(x - x.max())  # prob / max prob
        gap = (rel - p["min_p"]).abs()
        if ((gap > 0) & (gap < MARGIN)).any():
            return True
    return False


def make_row(rng, vocab, kind):
    if kind == "normal":
        row = rng.normal(0.0, rng.choice([1.0, 3.0, 10.0]), vocab)
    elif kind == "large":
        row = rng.normal(0.0, 1.0, vocab) * 1e3 + 2e4
    elif kind == "small":
        row = rng.normal(0.0, 1e-3, vocab)
    elif kind == "ties":
        row = rng.integers(-3, 3, vocab).astype(np.float64)
    elif kind == "equal":
        row = np.full(vocab, 1.5)
    elif kind == "neg_inf":
        row = rng.normal(0.0, 2.0, vocab)
        row[rng.random(vocab) < 0.4] = -np.inf
        row[rng.integers(vocab)] = rng.normal()  # at least one finite entry
    elif kind == "one_finite":
        row = np.full(vocab, -np.inf)
        row[rng.integers(vocab)] = -7.25
    elif kind == "all_neg_inf":
        row = np.full(vocab, -np.inf)
    else:
        raise ValueError(kind)
    # Short decimals keep the file small; float32 rounding makes the input exactly representable.
    return np.where(np.isfinite(row), np.round(row, 3), row).astype(np.float32)


def random_params(rng, vocab):
    """Each parameter is on with probability 1/2, so that combinations and single ones both occur."""
    choose = lambda xs: xs[rng.integers(len(xs))] if rng.random() < 0.5 else xs[0]
    return {
        "temperature": f32(choose([1.0, 0.7, 1.3, 0.3, 2.5, 50.0])),
        "top_k": int(choose([0, 1, 2, 5, 50, vocab + 3])),
        "top_p": f32(choose([1.0, 0.95, 0.9, 0.8, 0.5, 0.1])),
        "min_p": f32(choose([0.0, 0.02, 0.05, 0.1, 0.3, 1.0])),
        "repetition_penalty": f32(choose([1.0, 1.1, 1.3, 0.8, 2.0])),
    }


def seen_ids(rng, vocab):
    n = int(rng.integers(1, 12))  # HF needs at least one id; the empty history is tested in C++
    ids = [int(i) for i in rng.integers(0, vocab, n)]
    if n and rng.random() < 0.5:
        ids += ids[: n // 2]  # repeated ids are penalized once
    if rng.random() < 0.2:
        ids.append(vocab + int(rng.integers(0, 5)))  # outside the row: HF drops it
    return ids


def to_json_row(t):
    # Shortest decimal that reads back as the same float32; -inf as null.
    return [None if v == -math.inf else float(str(np.float32(v))) for v in t.tolist()]


def run_case(name, row, ids, params):
    scores = torch.from_numpy(row.copy()).unsqueeze(0)
    input_ids = torch.tensor([ids], dtype=torch.long)
    out = hf_processors(params)(input_ids, scores)[0]
    assert not torch.isnan(out).any() and not (out == math.inf).any()
    penalized = torch.from_numpy(row.copy())
    if params["repetition_penalty"] != 1.0:
        rp = RepetitionPenaltyLogitsProcessor(params["repetition_penalty"])
        penalized = rp(input_ids, penalized.unsqueeze(0))[0]
    if ambiguous(penalized, params):
        return None
    return {
        "name": name,
        "vocab": len(row),
        "logits": to_json_row(torch.from_numpy(row)),
        "seen_ids": ids,
        "params": params,
        "expected": to_json_row(out),
        "survivors": [i for i, v in enumerate(out.tolist()) if v != -math.inf],
    }


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def xoshiro_outputs(seed, n):
    rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & MASK64
    s, st = [], seed
    for _ in range(4):
        st, z = splitmix64(st)
        s.append(z)
    out = []
    for _ in range(n):
        out.append(str((rotl((s[1] * 5) & MASK64, 7) * 9) & MASK64))
        t = (s[1] << 17) & MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
    return out


def main():
    rng = np.random.default_rng(20240617)
    torch.manual_seed(0)
    cases, skipped = [], 0

    def add(name, row, ids, params):
        nonlocal skipped
        case = run_case(name, row, ids, params)
        if case is None:
            skipped += 1
        else:
            cases.append(case)

    off = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0}
    # Each processor alone, then exact tie cases at the top-p boundary (dyadic probabilities).
    row7 = make_row(rng, 7, "normal")
    for key, value in [("repetition_penalty", 1.3), ("temperature", 0.7), ("top_k", 3),
                       ("top_p", 0.5), ("min_p", 0.1)]:
        add(f"only_{key}", row7, [0, 2, 2, 5], {**off, key: f32(value) if key != "top_k" else value})
    add("uniform2_top_p_half", np.zeros(2, np.float32), [0], {**off, "top_p": 0.5})
    add("uniform4_top_p_quarter", np.zeros(4, np.float32), [0], {**off, "top_p": 0.25})
    add("uniform4_top_p_half", np.zeros(4, np.float32), [0], {**off, "top_p": 0.5})
    add("ties_top_k", np.array([1, 3, 3, 2, 3, 0, 1], np.float32), [0], {**off, "top_k": 2})
    add("ties_min_p_one", np.array([1, 3, 3, 2, 3, 0, 1], np.float32), [0], {**off, "min_p": 1.0})
    add("vocab1", np.array([0.25], np.float32), [0],
        {**off, "top_k": 1, "top_p": f32(0.1), "min_p": 1.0, "repetition_penalty": 2.0})
    add("all_neg_inf", make_row(rng, 7, "all_neg_inf"), [1],
        {**off, "temperature": f32(0.7), "top_k": 2, "top_p": f32(0.9), "min_p": f32(0.1)})

    # Large-vocabulary top-p with many survivors (the sort path), alone and after top-k and penalty.
    for i, (top_p, top_k, penalty) in enumerate([(0.9, 0, 1.0), (0.5, 0, 1.3), (0.8, 50, 1.0)]):
        row = (rng.normal(0.0, 1.0, 1000)).round(3).astype(np.float32)
        add(f"v1000_top_p_{i}", row, seen_ids(rng, 1000),
            {**off, "top_p": f32(top_p), "top_k": top_k, "repetition_penalty": f32(penalty)})

    plan = [(1, 10), (2, 25), (7, 150), (16, 20), (17, 20), (1000, 11)]
    kinds = ["normal", "large", "small", "ties", "equal", "neg_inf", "one_finite"]
    for vocab, count in plan:
        for i in range(count):
            kind = kinds[i % len(kinds)]
            row = make_row(rng, vocab, kind)
            for _ in range(8):  # a row whose parameters are ambiguous gets new parameters
                case = run_case(f"v{vocab}_{kind}_{i}", row, seen_ids(rng, vocab),
                                random_params(rng, vocab))
                if case is not None:
                    cases.append(case)
                    break
                skipped += 1

    rng_cases = [{"seed": s, "outputs": xoshiro_outputs(s, 8)} for s in [0, 1, 42, MASK64]]
    doc = {
        "generator": "tools/make_sampling_fixtures.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "skipped_ambiguous": skipped,
        "cases": cases,
        "xoshiro256starstar": rng_cases,
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(cases)} cases ({skipped} skipped) to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
