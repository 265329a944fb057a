#!/usr/bin/env python3
"""Generate the golden Hugging Face fixtures in tests/fixtures/ (tiny random MistralForCausalLM models).

Rerun (CPU only, about 10 s, deterministic: a second run gives byte-identical files):

    python3 tools/make_hf_fixtures.py --out tests/fixtures

Written with torch 2.15 and transformers 5.24 (recorded in manifest.json). Everything runs in fp32 on
CPU on one thread with `torch.use_deterministic_algorithms(True)`; reference numbers come from
attn_implementation="eager" and are cross-checked against "sdpa" on every non-pad position of the
logits and hidden states (largest absolute and relative-to-max-magnitude differences are recorded in
manifest.json; the script fails if the relative one exceeds 1e-5; greedy tokens must be identical).

Models
------
MistralConfig with vocab_size 256, hidden_size 64, intermediate_size 128, 2 layers (3 for
sliding_window), 4 heads, 2 kv heads, max_position_embeddings 256, rms_norm_eps 1e-5, pad 0, bos 1,
eos 2. Weights are drawn explicitly (never HF's initializer) from one torch.Generator per case, in
sorted parameter-name order: linear layers N(0, (1.2/sqrt(fan_in))^2), lm_head N(0, (4/sqrt(64))^2) so
the logits spread over several units, embeddings N(0, 1), every RMSNorm weight U(0.5, 1.5) (not ones, so
a forgotten norm weight is caught). Each case loops over seeds (deterministically) until every greedy
step has a top1 - top2 logit gap > 1e-2, so greedy tokens are robust to ~1e-5 float differences (the
minimal gap per case is in manifest.json). Every reference below is computed from the model as re-loaded
from the files written to the case folder, never from the in-memory model.

Cases (one folder each, holding exactly what `save_pretrained` writes: config.json,
generation_config.json, model.safetensors (or shards), plus the reference files):
  gqa               4 q heads / 2 kv heads, rope_parameters {rope_theta 1e4}, sliding_window null,
                    untied. Also inputs_right.json / expected_right.safetensors (right padding).
  mha               num_key_value_heads == num_attention_heads == 4; eos_token_id is the list [2, 3].
  sliding_window    sliding_window 5 < prompt length 12, 3 layers, greedy decode of 40 tokens (far past
                    the window; HF generate uses a rolling DynamicSlidingWindowLayer cache).
  head_dim          explicit head_dim 32 with hidden 64 and 4 heads (q_proj 128x64, o_proj 64x128), like
                    Mistral-NeMo; rms_norm_eps 1e-6 with embeddings of std 2e-3 so that the first norm is
                    eps-sensitive (using 1e-5 instead changes the logits visibly; checked).
  tied              tie_word_embeddings true: model.safetensors has NO lm_head.weight (checked); the
                    head is model.embed_tokens.weight.
  rope_1e6_toplevel rope_theta 1e6 written at the top level of config.json ("rope_theta": 1000000.0, no
                    rope_parameters) as hub checkpoints do; the script checks transformers loads it to
                    rope_parameters {"rope_theta": 1e6, "rope_type": "default"} and that theta 1e4 would
                    give different logits. All other cases keep the transformers-5 `rope_parameters` form.
  bf16              saved in bfloat16 (config "dtype": "bfloat16"). expected*.safetensors, greedy.json and
                    greedy_logits.safetensors are computed in fp32 from the bf16 weights upcast to fp32;
                    expected_bf16.safetensors ("logits", bf16 converted to fp32) and greedy_bf16.json are
                    HF run natively in bf16 (from_pretrained(dtype=torch.bfloat16)).
  sharded           saved with max_shard_size="150KB": model.safetensors.index.json + 3 shards.
  native            the gqa model in Mistral's native layout: params.json + consolidated.safetensors
                    (tok_embeddings, norm, output, layers.N.attention.{wq,wk,wv,wo},
                    layers.N.attention_norm, layers.N.ffn_norm, layers.N.feed_forward.{w1,w2,w3}; w1=gate,
                    w2=down, w3=up). wq/wk are stored with the INVERSE of HF's rotary permutation
                    (convert_mistral_weights_to_hf.permute_for_rope); the script re-applies the forward
                    permutation and checks it reproduces the HF tensors bit for bit. Its expected outputs
                    are those of ../gqa (referenced, not copied; see native/README.md).
  eos_stop          config eos_token_id is a token that row 0's greedy continuation emits at step
                    stop_step (0-based) and that rows 1 and 2 never emit; greedy.json comes from generate
                    with that eos: row 0 is padded with pad_token_id after stop_step. Row 0's step_logits
                    after stop_step are what HF computes while feeding the pad token (not meaningful).

Files per case
--------------
inputs.json          {"input_ids": [[...]], "attention_mask": [[...]]}: 3 prompts of different lengths,
                     LEFT-padded with pad_token_id 0 (mask 0 on pads); prompt ids are in [4, 256).
expected.safetensors float32 "logits" [B,T,V], "hidden_states.0".."hidden_states.L" [B,T,H] (exactly
                     output_hidden_states=True: .0 = token embeddings, .i = output of decoder layer i-1
                     for 1 <= i < L (residual stream, before any norm), .L = output of the FINAL RMSNorm,
                     i.e. lm_head's input; transformers replaces the last layer's raw output by
                     last_hidden_state), plus float32 "last_layer_output" [B,T,H] = raw output of the last
                     decoder layer before the final norm (captured with a hook), and int64 "position_ids"
                     [B,T]. ONE forward of the padded batch with position_ids = mask.cumsum(-1) - 1, pads
                     filled with 0 (what transformers 5.24 generate does; older versions filled with 1;
                     pad positions are not meaningful either way).
                     Only positions with attention_mask 1 are meaningful; pad positions hold whatever HF
                     computes for a fully masked query row and must not be compared.
expected_single.safetensors  float32 "logits.b" [T_b,V]: row b alone, unpadded, positions 0..T_b-1.
greedy.json          {"max_new_tokens": N, "new_tokens": [[N ids] per row], "eos_token_id": null|id,
                     "pad_token_id": 0} from generate(do_sample=False, eos_token_id=None, pad_token_id=0);
                     N = 8 (40 for sliding_window). Checked equal to a cache-free greedy loop (full
                     recompute each step) and to each row generated alone.
greedy_logits.safetensors  float32 "step_logits" [B,N,V]: generate(output_logits=True) raw logits.
manifest.json (top level)  per case: seed, min top1-top2 gap, sdpa-vs-eager and padded-vs-alone
                     differences, and the "feature has an effect" numbers below.

Checks made while generating (the script exits non-zero if one fails): padded rows == each row alone
and cached generate == cache-free loop (max abs diff <= 5e-6 x max |logit|); sdpa == eager; greedy
identical per row alone / in batch / sdpa; hidden_states convention; sliding_window 5 changes the
logits vs no window; rms_norm_eps 1e-5 vs 1e-6 changes head_dim's logits; theta 1e4 vs 1e6 changes
rope_1e6_toplevel's logits; tied has no lm_head.weight; sharded has >= 2 shards; the native
permutation round-trips exactly.

Sliding window semantics (transformers 5.24, masking_utils.sliding_window_overlay): a query at array
index q attends to keys k with q - W < k <= q (W keys counting itself), indices in the padded array;
left pads inside that range are masked, so for each row it is "the last W real tokens". In generate,
DynamicSlidingWindowLayer keeps the last W-1 keys/values per layer and each decode step attends to those
plus the new token, which equals the full-recompute mask above (checked for 40 steps).

Run with --check to regenerate into a temporary folder and compare against --out byte for byte.
"""

import argparse
import filecmp
import json
import math
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

import transformers
from transformers import MistralConfig, MistralForCausalLM

V, H, I = 256, 64, 128
PAD, BOS, EOS = 0, 1, 2
GAP_MIN = 1e-2
SDPA_TOL = 1e-5
BATCH_RTOL = 5e-6  # padded batch vs row alone, cache vs no cache: max abs diff / max |ref| (fp32), checked

BASE = dict(
    vocab_size=V,
    hidden_size=H,
    intermediate_size=I,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    sliding_window=None,
    tie_word_embeddings=False,
    pad_token_id=PAD,
    bos_token_id=BOS,
    eos_token_id=EOS,
)

# name -> (config overrides, options)
CASES = {
    "gqa": ({}, {"right_padding": True}),
    "mha": ({"num_key_value_heads": 4, "eos_token_id": [2, 3]}, {}),
    "sliding_window": ({"sliding_window": 5, "num_hidden_layers": 3}, {"lengths": (9, 12, 4), "new_tokens": 40}),
    "head_dim": ({"head_dim": 32, "rms_norm_eps": 1e-6}, {"embed_std": 2e-3}),
    "tied": ({"tie_word_embeddings": True}, {}),
    "rope_1e6_toplevel": ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}, {"toplevel_rope": True}),
    "bf16": ({}, {"bf16": True}),
    "sharded": ({}, {"max_shard_size": "150KB"}),
    "eos_stop": ({}, {"eos_stop": True}),
}
CASE_SEED_BASE = {name: 1000 * (i + 1) for i, name in enumerate(CASES)}


# ----------------------------------------------------------------------------------------------
# helpers


def dump_json(path, obj):
    """JSON with one line per row of a nested int list, stable byte output."""

    def enc(o, indent):
        pad = "  " * indent
        if isinstance(o, dict):
            items = [f'{pad}  {json.dumps(k)}: {enc(v, indent + 1).lstrip()}' for k, v in o.items()]
            return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(o, list) and o and all(isinstance(x, list) for x in o):
            return pad + "[\n" + ",\n".join(pad + "  " + json.dumps(x) for x in o) + "\n" + pad + "]"
        return pad + json.dumps(o)

    with open(path, "w") as f:
        f.write(enc(obj, 0) + "\n")


def make_config(overrides):
    kw = json.loads(json.dumps(BASE))
    kw.update(json.loads(json.dumps(overrides)))
    return MistralConfig(**kw)


def init_weights(model, seed, embed_std=1.0):
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            if name.endswith("norm.weight"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif name == "model.embed_tokens.weight":
                p.copy_(torch.randn(p.shape, generator=g) * embed_std)
            elif name == "lm_head.weight":
                p.copy_(torch.randn(p.shape, generator=g) * (4.0 / math.sqrt(p.shape[1])))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.2 / math.sqrt(p.shape[1])))


def make_prompts(seed, lengths):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, V, (n,), generator=g).tolist() for n in lengths]


def pad_batch(prompts, left=True):
    T = max(len(p) for p in prompts)
    ids, mask = [], []
    for p in prompts:
        n = T - len(p)
        if left:
            ids.append([PAD] * n + p)
            mask.append([0] * n + [1] * len(p))
        else:
            ids.append(p + [PAD] * n)
            mask.append([1] * len(p) + [0] * n)
    return torch.tensor(ids), torch.tensor(mask)


def position_ids_from_mask(mask):
    # transformers 5.24 GenerationMixin._prepare_position_ids_for_generation
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 0)


def load(path, attn="eager", dtype=torch.float32):
    m = MistralForCausalLM.from_pretrained(path, attn_implementation=attn, dtype=dtype)
    m.eval()
    assert m.dtype == dtype and m.config._attn_implementation == attn
    return m


@torch.no_grad()
def forward(model, ids, mask):
    pos = position_ids_from_mask(mask)
    captured = {}
    last = model.model.layers[-1]
    h = last.register_forward_hook(lambda mod, inp, out: captured.__setitem__("x", out[0] if isinstance(out, tuple) else out))
    try:
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True, use_cache=False)
    finally:
        h.remove()
    hs = out.hidden_states
    L = model.config.num_hidden_layers
    assert len(hs) == L + 1
    # convention checks: hs[0] = embeddings, hs[L] = final norm output = lm_head input
    assert torch.equal(hs[0], model.model.embed_tokens(ids))
    assert torch.equal(model.model.norm(captured["x"]), hs[L])
    assert torch.equal(model.lm_head(hs[L]), out.logits)
    return out.logits, hs, captured["x"], pos


@torch.no_grad()
def generate(model, ids, mask, n, eos=None):
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=n,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=PAD,
        return_dict_in_generate=True,
        output_logits=True,
    )
    new = out.sequences[:, ids.shape[1]:]
    logits = torch.stack(out.logits, dim=1)
    return new, logits


@torch.no_grad()
def greedy_no_cache(model, ids, mask, n):
    """Reference greedy loop without any KV cache: full recompute over the whole sequence each step."""
    toks, logits = [], []
    for _ in range(n):
        pos = position_ids_from_mask(mask)
        lg = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1]
        nxt = lg.argmax(-1)
        toks.append(nxt)
        logits.append(lg)
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return torch.stack(toks, 1), torch.stack(logits, 1)


def min_gap(step_logits):
    top2 = step_logits.float().topk(2, dim=-1).values
    return (top2[..., 0] - top2[..., 1]).min().item()


def maxdiff(a, b):
    return (a.float() - b.float()).abs().max().item()


def close(a, b):
    return maxdiff(a, b) <= BATCH_RTOL * b.float().abs().max().item()


def check(cond, msg):
    if not cond:
        raise SystemExit(f"make_hf_fixtures: check failed: {msg}")


# ----------------------------------------------------------------------------------------------
# one case


def build_and_save(name, overrides, opts, seed, d):
    cfg = make_config(overrides)
    model = MistralForCausalLM(cfg)
    init_weights(model, seed, opts.get("embed_std", 1.0))
    model.eval()
    if opts.get("bf16"):
        model = model.to(torch.bfloat16)
    kw = {}
    if "max_shard_size" in opts:
        kw["max_shard_size"] = opts["max_shard_size"]
    model.save_pretrained(d, **kw)
    if opts.get("toplevel_rope"):
        p = os.path.join(d, "config.json")
        with open(p) as f:
            c = json.load(f)
        theta = c.pop("rope_parameters")["rope_theta"]
        c["rope_theta"] = float(theta)
        with open(p, "w") as f:
            f.write(json.dumps(c, indent=2, sort_keys=True) + "\n")


def compute(d, prompts, n_new, opts, info, eos=None):
    """All reference numbers for one saved case folder. Returns dict of outputs and records checks in info."""
    ids, mask = pad_batch(prompts)
    m = load(d)
    logits, hs, last_out, pos = forward(m, ids, mask)
    res = {"ids": ids, "mask": mask, "logits": logits, "hs": hs, "last": last_out, "pos": pos}

    # each row alone
    singles = []
    for b, p in enumerate(prompts):
        t = torch.tensor([p])
        lg, _, _, _ = forward(m, t, torch.ones_like(t))
        singles.append(lg[0])
        T = len(p)
        check(close(logits[b, -T:], lg[0]), f"padded row {b} != row alone")
    res["singles"] = singles
    info["max_diff_padded_vs_alone"] = max(maxdiff(s, logits[b, -len(s):]) for b, s in enumerate(singles))

    # sdpa agrees on the meaningful (non-pad) positions
    ms = load(d, attn="sdpa")
    lg_s, hs_s, _, _ = forward(ms, ids, mask)
    sel = mask.bool()
    pairs = [(lg_s[sel], logits[sel])] + [(a[sel], b[sel]) for a, b in zip(hs_s, hs)]
    sd = max(maxdiff(a, b) for a, b in pairs)
    rel = max(maxdiff(a, b) / b.abs().max().item() for a, b in pairs)
    check(rel < SDPA_TOL, f"sdpa differs from eager by {sd} (relative {rel})")
    info["max_diff_sdpa_vs_eager"] = sd
    info["max_rel_diff_sdpa_vs_eager"] = rel

    # greedy
    new, step_logits = generate(m, ids, mask, n_new, eos=eos)
    res["new"], res["step_logits"] = new, step_logits
    if eos is None:
        check(new.shape[1] == n_new, "generate stopped early")
        ref_toks, ref_logits = greedy_no_cache(m, ids, mask, n_new)
        check(torch.equal(ref_toks, new), "generate (cached) != cache-free greedy")
        check(close(step_logits, ref_logits), "generate logits != cache-free logits")
        for b, p in enumerate(prompts):
            t = torch.tensor([p])
            nb, lb = generate(m, t, torch.ones_like(t), n_new)
            check(torch.equal(nb[0], new[b]), f"greedy row {b} alone != in batch")
        new_s, _ = generate(ms, ids, mask, n_new)
        check(torch.equal(new_s, new), "sdpa greedy != eager greedy")
    info["min_top1_top2_gap"] = min_gap(step_logits)
    return res


def write_case(d, res, prompts, n_new, eos=None, extra_greedy=None):
    dump_json(os.path.join(d, "inputs.json"), {"input_ids": res["ids"].tolist(), "attention_mask": res["mask"].tolist()})
    t = {"logits": res["logits"].float().contiguous(), "position_ids": res["pos"].to(torch.int64).contiguous()}
    for i, h in enumerate(res["hs"]):
        t[f"hidden_states.{i}"] = h.float().contiguous()
    t["last_layer_output"] = res["last"].float().contiguous()
    save_file(t, os.path.join(d, "expected.safetensors"))
    save_file({f"logits.{b}": s.float().contiguous() for b, s in enumerate(res["singles"])},
              os.path.join(d, "expected_single.safetensors"))
    g = {"max_new_tokens": n_new, "new_tokens": res["new"].tolist(), "eos_token_id": eos, "pad_token_id": PAD}
    if extra_greedy:
        g.update(extra_greedy)
    dump_json(os.path.join(d, "greedy.json"), g)
    save_file({"step_logits": res["step_logits"].float().contiguous()}, os.path.join(d, "greedy_logits.safetensors"))


def run_case(name, out_dir, manifest):
    overrides, opts = CASES[name]
    lengths = opts.get("lengths", (7, 12, 4))
    n_new = opts.get("new_tokens", 8)
    prompts = make_prompts(CASE_SEED_BASE[name] + 999, lengths)
    d = os.path.join(out_dir, name)
    for seed in range(CASE_SEED_BASE[name], CASE_SEED_BASE[name] + 200):
        if os.path.exists(d):
            shutil.rmtree(d)
        info = {"seed": seed}
        eos_extra = None
        if opts.get("eos_stop"):
            # pass 1: no eos, pick the token row 0 emits at step 3 (or nearby)
            build_and_save(name, overrides, opts, seed, d)
            ids, mask = pad_batch(prompts)
            new, sl = generate(load(d), ids, mask, n_new)
            if min_gap(sl) <= GAP_MIN:
                continue
            rows = new.tolist()
            choice = None
            for step in (3, 2, 4):
                tok = rows[0][step]
                if tok not in rows[0][:step] and all(tok not in r for r in rows[1:]) and tok != PAD:
                    choice = (step, tok)
                    break
            if choice is None:
                continue
            stop_step, eos = choice
            shutil.rmtree(d)
            build_and_save(name, dict(overrides, eos_token_id=eos), opts, seed, d)
            res = compute(d, prompts, n_new, opts, info, eos=eos)
            exp = [rows[0][: stop_step + 1] + [PAD] * (n_new - stop_step - 1)] + rows[1:]
            check(res["new"].tolist() == exp, "eos_stop: generate did not stop row 0 as expected")
            if info["min_top1_top2_gap"] <= GAP_MIN:  # includes row 0's steps after the stop
                continue
            info.update(eos_token_id=eos, stop_step=stop_step)
            eos_extra = {"stop_step": stop_step, "stopped_rows": [0]}
            write_case(d, res, prompts, n_new, eos=eos, extra_greedy=eos_extra)
            break

        build_and_save(name, overrides, opts, seed, d)
        res = compute(d, prompts, n_new, opts, info)
        if info["min_top1_top2_gap"] <= GAP_MIN:
            continue
        if opts.get("bf16"):
            mb = load(d, dtype=torch.bfloat16)
            lb, _, _, _ = forward(mb, res["ids"], res["mask"])
            nb, slb = generate(mb, res["ids"], res["mask"], n_new)
            if min_gap(slb) <= 0.0:  # no exact ties in bf16 greedy
                continue
            info["bf16_min_top1_top2_gap"] = min_gap(slb)
            info["bf16_max_logit_diff_vs_fp32"] = maxdiff(lb[res["mask"].bool()], res["logits"][res["mask"].bool()])
            same = (nb == res["new"])
            info["bf16_greedy_equal_fp32"] = bool(same.all())
            save_file({"logits": lb.float().contiguous()}, os.path.join(d, "expected_bf16.safetensors"))
            dump_json(os.path.join(d, "greedy_bf16.json"),
                      {"max_new_tokens": n_new, "new_tokens": nb.tolist(), "eos_token_id": None, "pad_token_id": PAD})
        write_case(d, res, prompts, n_new)
        if opts.get("right_padding"):
            ids_r, mask_r = pad_batch(prompts, left=False)
            m = load(d)
            lr, _, _, pos_r = forward(m, ids_r, mask_r)
            for b, p in enumerate(prompts):
                check(close(lr[b, : len(p)], res["singles"][b]), "right padded != alone")
            info["max_diff_right_padded_vs_alone"] = max(
                maxdiff(lr[b, : len(p)], res["singles"][b]) for b, p in enumerate(prompts))
            dump_json(os.path.join(d, "inputs_right.json"), {"input_ids": ids_r.tolist(), "attention_mask": mask_r.tolist()})
            save_file({"logits": lr.float().contiguous(), "position_ids": pos_r.contiguous()},
                      os.path.join(d, "expected_right.safetensors"))
        break
    else:
        raise SystemExit(f"make_hf_fixtures: no seed found for case {name}")

    case_checks(name, d, res, prompts, info)
    info["prompt_lengths"] = list(lengths)
    info["max_new_tokens"] = n_new
    manifest[name] = info
    print(f"{name:18s} seed={info['seed']} min_gap={info['min_top1_top2_gap']:.4f} "
          f"sdpa_diff={info['max_diff_sdpa_vs_eager']:.2e} (rel {info['max_rel_diff_sdpa_vs_eager']:.2e}) "
          f"pad_vs_alone={info['max_diff_padded_vs_alone']:.2e}")


def case_checks(name, d, res, prompts, info):
    """Sanity checks that the feature a case is about actually changes the numbers (tests that can fail)."""
    ids, mask = res["ids"], res["mask"]
    sel = mask.bool()

    def logits_with(**cfg_changes):
        m = load(d)
        for k, v in cfg_changes.items():
            setattr(m.config, k, v)
        if "rope_theta" in cfg_changes:
            m.config.rope_parameters = {"rope_type": "default", "rope_theta": cfg_changes["rope_theta"]}
            m.model.rotary_emb = type(m.model.rotary_emb)(m.config)
        if "rms_norm_eps" in cfg_changes:
            for mod in m.modules():
                if hasattr(mod, "variance_epsilon"):
                    mod.variance_epsilon = cfg_changes["rms_norm_eps"]
        return forward(m, ids, mask)[0]

    if name == "sliding_window":
        full = logits_with(sliding_window=None)
        info["max_diff_vs_no_window"] = maxdiff(full[sel], res["logits"][sel])
        check(info["max_diff_vs_no_window"] > 0.1, "sliding window has no effect")
    if name == "head_dim":
        info["max_diff_if_eps_1e-5"] = maxdiff(logits_with(rms_norm_eps=1e-5)[sel], res["logits"][sel])
        check(info["max_diff_if_eps_1e-5"] > 1e-2, "rms_norm_eps has no visible effect")
    if name == "rope_1e6_toplevel":
        with open(os.path.join(d, "config.json")) as f:
            c = json.load(f)
        check(c.get("rope_theta") == 1e6 and "rope_parameters" not in c, "config.json not in top-level form")
        cfg = MistralConfig.from_pretrained(d)
        check(cfg.rope_parameters == {"rope_type": "default", "rope_theta": 1e6}, f"loaded {cfg.rope_parameters}")
        info["max_diff_if_theta_1e4"] = maxdiff(logits_with(rope_theta=1e4)[sel], res["logits"][sel])
        check(info["max_diff_if_theta_1e4"] > 1e-2, "rope theta has no visible effect")
    if name == "tied":
        keys = set(load_file(os.path.join(d, "model.safetensors")).keys())
        check("lm_head.weight" not in keys, "tied model saved lm_head.weight")
        info["lm_head_weight_in_file"] = False
    if name == "sharded":
        with open(os.path.join(d, "model.safetensors.index.json")) as f:
            idx = json.load(f)
        shards = sorted(set(idx["weight_map"].values()))
        check(len(shards) >= 2 and not os.path.exists(os.path.join(d, "model.safetensors")), "not sharded")
        info["shards"] = shards
    if name == "mha":
        with open(os.path.join(d, "config.json")) as f:
            check(json.load(f)["eos_token_id"] == [2, 3], "eos list not written")


# ----------------------------------------------------------------------------------------------
# native Mistral layout


def permute_for_rope(tensor, n_heads, dim1, dim2):
    """Forward permutation, verbatim from transformers/models/mistral/convert_mistral_weights_to_hf.py
    (native interleaved-pair rotary layout -> HF rotate_half layout). That script is not shipped in the
    pip package; this copy is only used to verify the inverse below."""
    tensor = tensor.view(n_heads, dim1 // n_heads // 2, 2, dim2)
    tensor = tensor.transpose(1, 2)
    tensor = tensor.reshape(dim1, dim2)
    return tensor


def unpermute_for_rope(tensor, n_heads, dim1, dim2):
    """Inverse of permute_for_rope: HF layout -> Mistral native layout."""
    tensor = tensor.view(n_heads, 2, dim1 // n_heads // 2, dim2)
    tensor = tensor.transpose(1, 2)
    return tensor.reshape(dim1, dim2).contiguous()


def write_native(out_dir, manifest):
    src = os.path.join(out_dir, "gqa")
    d = os.path.join(out_dir, "native")
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    with open(os.path.join(src, "config.json")) as f:
        c = json.load(f)
    sd = load_file(os.path.join(src, "model.safetensors"))
    nh, nkv, hd, hid = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["hidden_size"]
    params = {
        "dim": hid,
        "n_layers": c["num_hidden_layers"],
        "head_dim": hd,
        "hidden_dim": c["intermediate_size"],
        "n_heads": nh,
        "n_kv_heads": nkv,
        "norm_eps": c["rms_norm_eps"],
        "vocab_size": c["vocab_size"],
        "rope_theta": c["rope_parameters"]["rope_theta"],
    }
    if c.get("sliding_window") is not None:
        params["sliding_window"] = c["sliding_window"]
    out = {
        "tok_embeddings.weight": sd["model.embed_tokens.weight"],
        "norm.weight": sd["model.norm.weight"],
        "output.weight": sd["lm_head.weight"],
    }
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        q = f"layers.{i}."
        out[q + "attention.wq.weight"] = unpermute_for_rope(sd[p + "self_attn.q_proj.weight"], nh, nh * hd, hid)
        out[q + "attention.wk.weight"] = unpermute_for_rope(sd[p + "self_attn.k_proj.weight"], nkv, nkv * hd, hid)
        out[q + "attention.wv.weight"] = sd[p + "self_attn.v_proj.weight"]
        out[q + "attention.wo.weight"] = sd[p + "self_attn.o_proj.weight"]
        out[q + "attention_norm.weight"] = sd[p + "input_layernorm.weight"]
        out[q + "ffn_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
        out[q + "feed_forward.w1.weight"] = sd[p + "mlp.gate_proj.weight"]
        out[q + "feed_forward.w2.weight"] = sd[p + "mlp.down_proj.weight"]
        out[q + "feed_forward.w3.weight"] = sd[p + "mlp.up_proj.weight"]
        check(not torch.equal(out[q + "attention.wq.weight"], sd[p + "self_attn.q_proj.weight"]), "permutation is identity")
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(d, "consolidated.safetensors"))
    dump_json(os.path.join(d, "params.json"), params)

    # verify: convert back exactly as convert_mistral_weights_to_hf.convert_state_dict does
    back = load_file(os.path.join(d, "consolidated.safetensors"))
    check(len(back) == len(sd), "native tensor count")
    for i in range(params["n_layers"]):
        wq = back[f"layers.{i}.attention.wq.weight"].view(nh, hd, hid).reshape(nh * hd, hid)
        wk = back[f"layers.{i}.attention.wk.weight"].view(nkv, hd, hid).reshape(nkv * hd, hid)
        check(torch.equal(permute_for_rope(wq, nh, nh * hd, hid), sd[f"model.layers.{i}.self_attn.q_proj.weight"]), "wq")
        check(torch.equal(permute_for_rope(wk, nkv, nkv * hd, hid), sd[f"model.layers.{i}.self_attn.k_proj.weight"]), "wk")
    with open(os.path.join(d, "README.md"), "w") as f:
        f.write(
            "# native: the `gqa` model in Mistral's native layout\n\n"
            "`params.json` + `consolidated.safetensors` hold exactly the weights of `../gqa` (float32), renamed to\n"
            "Mistral's names, with `attention.wq` / `attention.wk` stored in Mistral's interleaved rotary layout\n"
            "(the inverse of `permute_for_rope` in transformers' `convert_mistral_weights_to_hf.py`; converting\n"
            "back reproduces the HF tensors bit for bit, checked by tools/make_hf_fixtures.py). `w1` = gate_proj,\n"
            "`w2` = down_proj, `w3` = up_proj. There is no `sliding_window` key (the model has none).\n\n"
            "The expected outputs are NOT copied: use `../gqa/inputs.json`, `../gqa/expected.safetensors`,\n"
            "`../gqa/expected_single.safetensors`, `../gqa/greedy.json` and `../gqa/greedy_logits.safetensors`.\n"
            "Special ids (not in params.json): pad 0, bos 1, eos 2.\n"
        )
    manifest["native"] = {"same_as": "gqa", "params": params}
    print("native             (gqa weights, permutation verified)")


# ----------------------------------------------------------------------------------------------


def generate_all(out_dir):
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.makedirs(out_dir, exist_ok=True)
    manifest = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}
    for name in CASES:
        run_case(name, out_dir, manifest)
    write_native(out_dir, manifest)
    dump_json(os.path.join(out_dir, "manifest.json"), manifest)
    for root, _, files in os.walk(out_dir):
        for fn in files:
            os.chmod(os.path.join(root, fn), 0o644)  # safetensors writes 0600


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--check", action="store_true", help="regenerate into a temp dir and compare with --out")
    args = ap.parse_args()
    if not args.check:
        generate_all(args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        generate_all(tmp)
        bad = []
        for root, _, files in os.walk(tmp):
            for fn in files:
                a = os.path.join(root, fn)
                rel = os.path.relpath(a, tmp)
                b = os.path.join(args.out, rel)
                if not os.path.exists(b) or not filecmp.cmp(a, b, shallow=False):
                    bad.append(rel)
        if bad:
            print("differs:", *bad, sep="\n  ")
            sys.exit(1)
        print("fixtures up to date")


if __name__ == "__main__":
    main()
