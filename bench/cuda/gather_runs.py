#!/usr/bin/env python3
"""Gathers the JSON of bench runs (`mistral bench`, hf_bench.py) into one file.

  gather_runs.py RUNS_DIR OUT_JSON

RUNS_DIR holds NAME.json (the run's stdout) and NAME.err (its stderr) for every run. OUT_JSON gets
{NAME: the run's JSON}, sorted by name; a run whose JSON does not parse (it failed) gets
{"error": the parse error and the last 2,000 characters of its stderr}.
"""
import glob
import json
import os
import sys


def load(runs, name):
    try:
        with open(os.path.join(runs, name + ".json")) as f:
            return json.load(f)
    except Exception as e:  # a run that failed keeps the end of its stderr
        err = os.path.join(runs, name + ".err")
        tail = open(err).read()[-2000:] if os.path.exists(err) else ""
        return {"error": f"{e}: {tail}"}


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: gather_runs.py RUNS_DIR OUT_JSON")
    runs, out = sys.argv[1], sys.argv[2]
    if not os.path.isdir(runs):
        sys.exit(f"gather_runs.py: RUNS_DIR {runs}: not a directory")
    names = sorted(os.path.basename(f)[:-5] for f in glob.glob(os.path.join(runs, "*.json")))
    with open(out, "w") as f:
        json.dump({n: load(runs, n) for n in names}, f, indent=1)


if __name__ == "__main__":
    main()
