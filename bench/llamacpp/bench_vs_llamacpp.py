#!/usr/bin/env python3
"""Side-by-side CPU benchmark, our engine against llama.cpp on the same random-weight weights.

For each weight format, one engine after the other (never both in RAM at once), batch 1, T threads:
prefill of P tokens (one batch) and N greedy decode steps.
  bf16  ours as stored (bf16, memory-mapped)        vs llama.cpp BF16 GGUF
  f16   (llama.cpp only) F16 GGUF, compared with our bf16 run: both 16-bit weights
  q8_0  ours int8 (`mistral quantize`, once, in WORK)  vs llama.cpp Q8_0 (llama_model_quantize)
  q4_0  ours int4 (`mistral quantize`, once, in WORK)  vs llama.cpp Q4_0 (llama_model_quantize)
Both engines read their quantized files memory-mapped, as they would be deployed.
The machine's read bandwidth is measured in the same run (bench/tools/read_bandwidth.cc), before
and after the engines. Prints a markdown table and writes every raw number to WORK/results-*.json.

Decode bandwidth = bytes of weights x decode tokens/s: for ours, `mistral bench`'s weight_bytes
(every weight tensor, the embedding included); for llama.cpp, the tensor bytes of the GGUF file
(the same set of tensors). KV-cache reads (under 100 positions here) are not counted for either.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

# The llama.cpp commit that a llama-cpp-python release vendors (its CHANGELOG).
LLAMA_CPP_VENDORED = {"0.3.36": "ggml-org/llama.cpp@0c1e57098"}
OUR_WEIGHTS = {"bf16": None, "q8_0": "int8", "q4_0": "int4"}  # f16 reuses our bf16 run
LLAMA_NAME = {"bf16": "BF16", "f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}
# Expected GGUF sizes for the 7B, to refuse a conversion that cannot fit on the disk.
GGUF_GB_7B = {"bf16": 14.5, "f16": 14.5, "q8_0": 7.7, "q4_0": 4.1}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, capture=True):
    log("+ " + " ".join(cmd))
    p = subprocess.run(cmd, stdout=subprocess.PIPE if capture else None, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited with {p.returncode}")
    return p.stdout


def last_json(text):
    """The JSON object a command printed last (commands may print other lines before it)."""
    start = text.rfind("\n{")
    return json.loads(text[start + 1:] if start >= 0 else text[text.index("{"):])


def read_bandwidth(work, threads):
    exe = os.path.join(work, "read_bandwidth")
    src = os.path.join(ROOT, "bench", "tools", "read_bandwidth.cc")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        run(["g++", "-O2", "-march=native", "-o", exe, src, "-lpthread"])
    out = run([exe, str(threads)])
    values = [float(v) for v in re.findall(r"([0-9.]+) GB/s", out)]
    return {"gb_s": values, "max_gb_s": max(values)}


def mem_available_gb():
    with open("/proc/meminfo") as f:
        for ln in f:
            if ln.startswith("MemAvailable:"):
                return int(ln.split()[1]) / 1e6
    return float("nan")


def note_memory(what, need_bytes):
    """Records the memory available before an engine starts and warns when the weights would not
    fit beside what other processes hold (the engine would then page its weights in and out)."""
    avail = mem_available_gb()
    if avail < need_bytes / 1e9 + 1:
        log(f"warning: {what} needs ~{need_bytes / 1e9:.1f} GB, {avail:.1f} GB available")
    return avail


def ensure_space(path, gb):
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free / 1e9
    if free < gb + 2:
        raise SystemExit(f"not enough disk for {path}: {free:.1f} GB free, ~{gb + 2:.1f} GB needed")


def ensure_gguf(fmt, model, work, threads, layers):
    path = os.path.join(work, f"model-{fmt}.gguf")
    if os.path.exists(path):
        return path
    scale = layers / 32.0
    if fmt in ("bf16", "f16"):
        ensure_space(path, GGUF_GB_7B[fmt] * scale)
        run([sys.executable, os.path.join(HERE, "hf_to_gguf.py"), model, path, "--outtype", fmt],
            capture=False)
    else:
        src = ensure_gguf("bf16", model, work, threads, layers)
        ensure_space(path, GGUF_GB_7B[fmt] * scale)
        info = last_json(run([sys.executable, os.path.join(HERE, "llama_runner.py"), "quantize",
                              src, path, "--type", fmt, "--threads", str(threads)]))
        with open(path + ".quantize.json", "w") as f:
            json.dump(info, f, indent=2)
    return path


def gguf_info(path):
    return last_json(run([sys.executable, os.path.join(HERE, "llama_runner.py"), "info", path]))


def our_flags_supported(mistral):
    p = subprocess.run([mistral, "bench", "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    return "--weights" in p.stdout


def ensure_quantized(mistral, model, weights, work):
    """Our quantized checkpoint of `model`, written once by `mistral quantize`."""
    out = os.path.join(work, f"ours-{weights}")
    if not os.path.exists(os.path.join(out, "config.json")):
        run([mistral, "quantize", "--model", model, "--out", out, "--weights", weights])
    return out


def bench_ours(mistral, model, weights, a):
    if weights:
        model = ensure_quantized(mistral, model, weights, a.work)
    cmd = [mistral, "bench", "--model", model, "--prompt-tokens", str(a.prompt_tokens),
           "--new-tokens", str(a.new_tokens), "--threads", str(a.threads)]
    cmd += a.our_flags.split()
    avail = note_memory("our engine", a.model_bytes)
    for _ in range(a.warmup):
        run(cmd)
    runs = [last_json(run(cmd)) for _ in range(a.repeats)]
    med = lambda k: float(np.median([r[k] for r in runs]))  # noqa: E731
    return {"engine": "ours", "cmd": " ".join(cmd), "runs": runs, "mem_available_gb": avail,
            "prefill_tok_s": med("prefill_tok_s"), "decode_tok_s": med("decode_tok_s"),
            "weight_bytes": runs[0]["weight_bytes"],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def bench_llama(path, a):
    avail = note_memory("llama.cpp", os.path.getsize(path))
    cmd = [sys.executable, os.path.join(HERE, "llama_runner.py"), "bench", "--model", path,
           "--prompt-tokens", str(a.prompt_tokens), "--new-tokens", str(a.new_tokens),
           "--threads", str(a.threads), "--repeats", str(a.repeats), "--warmup", str(a.warmup),
           "--flash-attn", a.flash_attn]
    r = last_json(run(cmd))
    r["cmd"] = " ".join(cmd)
    r["mem_available_gb"] = avail
    return r


def llama_bench_tool(exe, path, a):
    """llama.cpp's own llama-bench (pp P / tg N from an empty context), as a cross-check."""
    cmd = [exe, "-m", path, "-p", str(a.prompt_tokens), "-n", str(a.new_tokens), "-t",
           str(a.threads), "-r", str(max(a.repeats, 1)), "-o", "json"]
    rows = json.loads(run(cmd))
    out = {}
    for row in rows:
        key = "prefill_tok_s" if row.get("n_prompt", 0) > 0 else "decode_tok_s"
        out[key] = row["avg_ts"]
    return out


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": cpu, "nproc": os.cpu_count(), "kernel": platform.release(),
            "mem_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9}


def versions(mistral):
    v = {}
    try:
        import importlib.metadata as md
        import llama_cpp
        v["llama_cpp_python"] = md.version("llama_cpp_python")
        v["gguf"] = md.version("gguf")
        v["llama_cpp_system_info"] = llama_cpp.llama_print_system_info().decode().strip()
    except Exception as e:  # reported, not fatal: the run itself will fail loudly if it matters
        v["error"] = repr(e)
    git = lambda *c: subprocess.run(["git", "-C", ROOT, *c], stdout=subprocess.PIPE,  # noqa: E731
                                    stderr=subprocess.DEVNULL, text=True).stdout.strip()
    # The commit is the repository's only when the binary was built from it; a binary built
    # elsewhere names its commit through MISTRAL_COMMIT.
    if os.environ.get("MISTRAL_COMMIT"):
        v["ours_commit"] = os.environ["MISTRAL_COMMIT"]
    elif os.path.abspath(mistral).startswith(ROOT + os.sep):
        v["ours_commit"] = git("rev-parse", "--short", "HEAD")
        if git("status", "--porcelain", "--untracked-files=no"):
            v["ours_commit"] += " (tree with uncommitted changes)"
    else:
        v["ours_commit"] = "unknown (set MISTRAL_COMMIT)"
    v["mistral_bin"] = mistral
    return v


def fmt_ratio(x, y):
    return f"{x / y:.2f}" if x and y else "–"


def table(results, bw):
    lines = [
        f"| weights | engine | prefill {results['prompt_tokens']} tok/s | decode tok/s | "
        f"prefill ours/llama.cpp | decode ours/llama.cpp | weight bytes | decode bandwidth | "
        f"of {bw:.1f} GB/s measured | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fmt, row in results["formats"].items():
        ll, ours = row.get("llama"), row.get("ours")
        for name, r in (("ours " + (row.get("our_label") or ""), ours),
                        (f"llama.cpp {LLAMA_NAME[fmt]}", ll)):
            if r is None:
                lines.append(f"| {fmt} | {name.strip()} | – | – | | | | | | "
                             f"{row.get('ours_skipped', '')} |")
                continue
            is_ours = r is ours
            gbs = r["decode_tok_s"] * r["weight_bytes"] / 1e9
            ratio_p = fmt_ratio(ours["prefill_tok_s"], ll["prefill_tok_s"]) if is_ours and ll else ""
            ratio_d = fmt_ratio(ours["decode_tok_s"], ll["decode_tok_s"]) if is_ours and ll else ""
            lines.append(
                f"| {fmt} | {name.strip()} | {r['prefill_tok_s']:.2f} | {r['decode_tok_s']:.3f} | "
                f"{ratio_p} | {ratio_d} | {r['weight_bytes'] / 1e9:.2f} GB | {gbs:.1f} GB/s | "
                f"{gbs / bw:.2f} | {r['peak_rss_mb'] / 1024:.1f} GB |")
    return "\n".join(lines)


def env_int(name, default):
    return int(os.environ.get(name, default))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("MODEL_DIR", "/tmp/m7b"))
    ap.add_argument("--work", default=os.environ.get("WORK_DIR", "/tmp/llbench"))
    ap.add_argument("--formats", default=os.environ.get("FORMATS", "bf16,q8_0,q4_0"),
                    help="comma list of bf16, f16, q8_0, q4_0")
    ap.add_argument("--threads", type=int, default=env_int("THREADS", 2))
    ap.add_argument("--prompt-tokens", type=int, default=env_int("PROMPT_TOKENS", 64))
    ap.add_argument("--new-tokens", type=int, default=env_int("NEW_TOKENS", 32))
    ap.add_argument("--repeats", type=int, default=env_int("REPEATS", 2))
    ap.add_argument("--warmup", type=int, default=env_int("WARMUP", 1))
    ap.add_argument("--flash-attn", default=os.environ.get("FLASH_ATTN", "auto"),
                    choices=["auto", "on", "off"])
    ap.add_argument("--our-flags", default=os.environ.get("OUR_FLAGS", ""),
                    help="extra flags for `mistral bench`, e.g. \"--kv-cache f16\" (llama.cpp's KV type)")
    ap.add_argument("--llama-bench", default=os.environ.get("LLAMA_BENCH", ""),
                    help="path of llama.cpp's llama-bench binary, for a cross-check column")
    a = ap.parse_args()
    mistral = os.environ.get("MISTRAL_BIN", os.path.join(ROOT, "build", "apps", "cli", "mistral"))
    formats = [f for f in a.formats.split(",") if f]
    for f in formats:
        if f not in LLAMA_NAME:
            raise SystemExit(f"unknown format {f}")
    if "f16" in formats and "bf16" not in formats:
        formats.insert(0, "bf16")  # the f16 row is read against our bf16 run
    os.makedirs(a.work, exist_ok=True)
    with open(os.path.join(a.model, "config.json")) as f:
        layers = json.load(f)["num_hidden_layers"]
    a.model_bytes = sum(os.path.getsize(os.path.join(a.model, n)) for n in os.listdir(a.model)
                        if n.endswith(".safetensors"))

    t_start = time.time()
    res = {"date_utc": datetime.datetime.utcnow().isoformat(timespec="seconds") + "Z",
           "machine": machine(), "versions": versions(mistral), "model": a.model,
           "threads": a.threads, "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens,
           "repeats": a.repeats, "warmup": a.warmup, "load_before": os.getloadavg(),
           "formats": {}}
    ggufs = {f: ensure_gguf(f, a.model, a.work, a.threads, layers) for f in formats}
    res["gguf"] = {f: gguf_info(p) for f, p in ggufs.items()}
    res["read_bandwidth_before"] = read_bandwidth(a.work, a.threads)
    weights_flag = our_flags_supported(mistral)

    for fmt in formats:
        row = {}
        if fmt == "f16":
            row["ours"] = res["formats"]["bf16"]["ours"]
            row["our_label"] = "bf16 (same run as above)"
        elif OUR_WEIGHTS[fmt] and not weights_flag:
            row["ours"] = None
            row["ours_skipped"] = "ours: this binary has no --weights option"
            log(f"{fmt}: skipping our engine ({row['ours_skipped']})")
        else:
            try:
                row["ours"] = bench_ours(mistral, a.model, OUR_WEIGHTS[fmt], a)
                row["our_label"] = OUR_WEIGHTS[fmt] or "bf16"
            except RuntimeError as e:
                row["ours"] = None
                row["ours_skipped"] = f"ours failed: {e}"
                log(f"{fmt}: {row['ours_skipped']}")
        ll = bench_llama(ggufs[fmt], a)
        ll["weight_bytes"] = res["gguf"][fmt]["tensor_bytes"]
        row["llama"] = ll
        if a.llama_bench:
            row["llama_bench_tool"] = llama_bench_tool(a.llama_bench, ggufs[fmt], a)
        res["formats"][fmt] = row

    res["read_bandwidth_after"] = read_bandwidth(a.work, a.threads)
    res["load_after"] = os.getloadavg()
    res["elapsed_s"] = time.time() - t_start
    bw = max(res["read_bandwidth_before"]["max_gb_s"], res["read_bandwidth_after"]["max_gb_s"])
    res["read_bandwidth_gb_s"] = bw
    out_json = os.path.join(a.work, time.strftime("results-%Y%m%d-%H%M%S.json"))
    res["table"] = table(res, bw)
    with open(out_json, "w") as f:
        json.dump(res, f, indent=2)

    v = res["versions"]
    print(f"Machine: {res['machine']['cpu']}, {res['machine']['nproc']} cores; "
          f"{res['date_utc']}; load {res['load_before'][0]:.1f} before, "
          f"{res['load_after'][0]:.1f} after")
    print(f"Ours: {v.get('ours_commit')} ({mistral}); llama.cpp: llama-cpp-python "
          f"{v.get('llama_cpp_python')} (llama.cpp "
          f"{LLAMA_CPP_VENDORED.get(v.get('llama_cpp_python'), 'commit unknown')}), gguf {v.get('gguf')}")
    print(f"Batch 1, {a.threads} threads, prefill {a.prompt_tokens} tokens, decode "
          f"{a.new_tokens} tokens; median of {a.repeats} runs after {a.warmup} warm-up.")
    print(f"Read bandwidth (bench/tools/read_bandwidth.cc, {a.threads} threads): before "
          f"{res['read_bandwidth_before']['gb_s']}, after {res['read_bandwidth_after']['gb_s']} "
          f"GB/s; the table uses the best, {bw:.1f} GB/s.\n")
    print(res["table"])
    for fmt, row in res["formats"].items():
        if "llama_bench_tool" in row:
            t = row["llama_bench_tool"]
            print(f"\nllama-bench {LLAMA_NAME[fmt]}: pp{a.prompt_tokens} "
                  f"{t.get('prefill_tok_s', 0):.2f} tok/s, tg{a.new_tokens} "
                  f"{t.get('decode_tok_s', 0):.3f} tok/s")
    for fmt in formats:
        g = res["gguf"][fmt]["embedding_and_output"]
        if fmt in ("q8_0", "q4_0"):
            print(f"\nllama.cpp {LLAMA_NAME[fmt]} keeps: " +
                  ", ".join(f"{k} {t}" for k, t in sorted(g.items())) +
                  "; tensor types: " + ", ".join(
                      f"{k} x{v['tensors']}" for k, v in res["gguf"][fmt]["types"].items()))
    print(f"\nRaw numbers: {out_json} ({res['elapsed_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
