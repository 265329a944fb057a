"""Encoding throughput, ours vs Hugging Face `tokenizers` (single-threaded) on a large mixed corpus.

    python3 bench/tokenizer/bench_tokenizers.py --bench-exe build/bench/tokenizer/tokenizer_bench

The corpus (~16 MB, deterministic) mixes Python source code from the standard library, English
prose (license texts and package docs found on the machine) and generated multilingual text (CJK,
Cyrillic, Arabic, emoji, digits, whitespace runs; tests/tokenizer/generators.py). Each tokenizer is
timed on the same documents, best of 3; "same ids" compares a hash of all ids with the reference of
that file format (sentencepiece for .model, HF tokenizers for tokenizer.json, tiktoken for tekken).
Tokenizers compared:
  * Mistral v3 SentencePiece: ours (.model, SpmBpeEncoder) and ours (tokenizer.json BPE) vs HF
    `tokenizers` on the tokenizer.json converted from the same .model
  * tekken_240718: ours vs HF `tokenizers` on transformers' conversion of it (needs transformers),
    and vs tiktoken (mistral-common's reference)
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

os.environ["RAYON_NUM_THREADS"] = "1"  # before importing tokenizers: one thread
os.environ["TOKENIZERS_PARALLELISM"] = "false"

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tokenizer"))
import generators  # noqa: E402
import make_tokenizer_json  # noqa: E402


def build_corpus(path, target_mb=16):
    docs = []
    size = 0
    budget = target_mb * 1_000_000

    def add(text, share):
        nonlocal size
        for i in range(0, len(text), 4000):
            if size >= budget * share:
                return False
            chunk = text[i:i + 4000]
            docs.append(chunk)
            size += len(chunk.encode())
        return True

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for f in sorted(stdlib.glob("*.py")):
        if not add(f.read_text(errors="replace"), 0.4):
            break
    prose = sorted(Path("/usr/share/common-licenses").glob("*")) + sorted(Path("/usr/share/doc").glob("*/README*"))
    prose += sorted(Path(sysconfig.get_paths()["purelib"]).glob("*.dist-info/METADATA"))
    for f in prose:
        try:
            if not add(f.read_text(errors="replace"), 0.7):
                break
        except (IsADirectoryError, UnicodeDecodeError, PermissionError):
            continue
    strings = generators.gen_strings(seed=2024, n=200_000)
    k = 0
    while size < budget:
        chunk = " ".join(strings[k % len(strings)] for k in range(k, k + 60))
        k += 60
        docs.append(chunk)
        size += len(chunk.encode())
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    return docs


def ids_hash(all_ids):
    h = 0
    mask = (1 << 64) - 1
    for ids in all_ids:
        for i in ids:
            h = (h * 1000003 + i + 1) & mask
    return str(h)


def time_best(fn, repeats=3):
    best, out = 1e30, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run_ours(exe, tokenizer, corpus):
    out = subprocess.run([exe, str(tokenizer), str(corpus), "3"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def hf_row(name, tokenizer_json, docs, nbytes):
    import tokenizers
    tok = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    tok.encode_special_tokens = True
    secs, encs = time_best(lambda: tok.encode_batch(docs, add_special_tokens=False))
    ids = [e.ids for e in encs]
    return {"name": name, "seconds": secs, "mb_per_s": nbytes / secs / 1e6, "tokens": sum(map(len, ids)),
            "hash": ids_hash(ids)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench-exe", required=True)
    ap.add_argument("--mb", type=int, default=16)
    args = ap.parse_args()
    import mistral_common
    data = Path(mistral_common.__file__).parent / "data"
    work = Path(tempfile.mkdtemp(prefix="tokbench"))
    corpus = work / "corpus.jsonl"
    docs = build_corpus(corpus, args.mb)
    nbytes = sum(len(d.encode()) for d in docs)
    print(f"corpus: {len(docs)} documents, {nbytes / 1e6:.1f} MB", file=sys.stderr)
    rows = []

    v3 = data / "mistral_instruct_tokenizer_240323.model.v3"
    v3_json = make_tokenizer_json.convert(v3, work / "v3_hf", "legacy")
    ref = hf_row("HF tokenizers, v3 tokenizer.json", v3_json, docs, nbytes)
    rows.append(ref)
    import sentencepiece
    sp = sentencepiece.SentencePieceProcessor(model_file=str(v3))
    secs, ids = time_best(lambda: sp.encode(docs, num_threads=1))
    rows.append({"name": "sentencepiece (Python), v3 .model", "seconds": secs, "mb_per_s": nbytes / secs / 1e6,
                 "tokens": sum(map(len, ids)), "hash": ids_hash(ids)})
    spm_hash = rows[-1]["hash"]
    # Our .model encoder must equal sentencepiece; our tokenizer.json BPE must equal HF tokenizers
    # on the same file (the converted file differs from sentencepiece only where [REFERENCE_DOC_n]
    # user-defined pieces follow text: HF's added-token split, not ours).
    for label, path, want in [("ours, v3 .model (SpmBpeEncoder)", v3, spm_hash),
                              ("ours, v3 tokenizer.json BPE", v3_json, ref["hash"])]:
        o = run_ours(args.bench_exe, path, corpus)
        rows.append({"name": label, "seconds": o["seconds"], "mb_per_s": o["mb_per_s"], "tokens": o["tokens"],
                     "hash": o["hash"], "ratio": ref["seconds"] / o["seconds"], "same_ids": o["hash"] == want})

    tekken = data / "tekken_240718.json"
    o = run_ours(args.bench_exe, tekken, corpus)
    try:
        from transformers.integrations.mistral import convert_tekken_tokenizer
        convert_tekken_tokenizer(str(tekken)).save_pretrained(str(work / "tekken_hf"))
        ref = hf_row("HF tokenizers, tekken tokenizer.json", work / "tekken_hf" / "tokenizer.json", docs, nbytes)
        rows.append(ref)
        o2 = run_ours(args.bench_exe, work / "tekken_hf" / "tokenizer.json", corpus)
        rows.append({"name": "ours, tekken tokenizer.json (ByteLevel BPE)", "seconds": o2["seconds"],
                     "mb_per_s": o2["mb_per_s"], "tokens": o2["tokens"], "hash": o2["hash"],
                     "ratio": ref["seconds"] / o2["seconds"], "same_ids": o2["hash"] == ref["hash"]})
    except ImportError:
        ref = None
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    tk = Tekkenizer.from_file(str(tekken))
    secs, ids = time_best(lambda: [tk.encode(d, bos=False, eos=False) for d in docs])
    rows.append({"name": "tiktoken via mistral-common, tekken", "seconds": secs, "mb_per_s": nbytes / secs / 1e6,
                 "tokens": sum(map(len, ids)), "hash": ids_hash(ids)})
    tiktoken_hash = rows[-1]["hash"]
    row = {"name": "ours, tekken_240718.json", "seconds": o["seconds"], "mb_per_s": o["mb_per_s"],
           "tokens": o["tokens"], "hash": o["hash"], "same_ids": o["hash"] == tiktoken_hash}
    if ref:
        row["ratio"] = ref["seconds"] / o["seconds"]
    rows.append(row)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.platform()}; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{'tokenizer':45s} {'MB/s':>8s} {'seconds':>8s} {'tokens':>10s} {'vs HF':>6s} same ids")
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ""
        same = {True: "yes", False: "NO"}.get(r.get("same_ids"), "")
        print(f"{r['name']:45s} {r['mb_per_s']:8.2f} {r['seconds']:8.3f} {r['tokens']:10d} {ratio:>6s} {same}")


if __name__ == "__main__":
    main()
