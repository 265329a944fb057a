# Sourced by the decode sweeps (decode_knobs.sh): makes the random 7B in
# $work/m7b once, and decode LABEL ARGS... runs `mistral bench --device cuda` on it (128 decode
# steps, best of 2, ARGS added) and prints LABEL, decode tok/s and ms per token (report LABEL JSON
# prints that line for any bench JSON). Needs $out (for the run's JSON and stderr, run.json and
# run.err) and $work; sets $dir (the staged binaries: DEVICE_DIR, default .device_cuda), $bin
# ($dir/mistral) and $here (this folder). keep_run NAME copies the last run's JSON and
# stderr to $runs/NN-NAME.{json,err} (NN counts up), for gather_runs.py; start_sweep NAME sets
# $runs to an empty $work/NAME and prints the GPU and the time. gpu_test NAME [ARGS...] runs one
# GPU test binary (log in $out) and prints its summary and failures; gpu_tests [KERNEL_FILTER]
# runs cuda_kernels_test (only the gtest filter's tests, if given) and cuda_model_test so.
dir=${DEVICE_DIR:-.device_cuda}
bin=$dir/mistral
here=$(dirname "${BASH_SOURCE[0]}")
mkdir -p "$out" "$work"
[[ -f "$work/m7b/config.json" ]] ||
  "$bin" random-checkpoint --preset 7b --dtype bf16 --out "$work/m7b" > /dev/null
decode() {
  local label=$1; shift
  "$bin" bench --device cuda --model "$work/m7b" --new-tokens 128 --runs 2 "$@" \
    > "$out/run.json" 2> "$out/run.err" || { echo "$label: failed"; tail -3 "$out/run.err"; return; }
  report "$label" "$out/run.json"
}
report() {  # LABEL JSON
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); t=d['decode_tok_s']; \
print(f'{sys.argv[2]:55s} {t:8.1f} tok/s {1000/t:7.3f} ms', flush=True)" "$2" "$1"
}
keep_run() {  # NAME
  count=$((${count:-0} + 1))
  local file=$runs/$(printf %02d "$count")-$1
  cp "$out/run.json" "$file.json"
  cp "$out/run.err" "$file.err"
}
start_sweep() {  # NAME
  runs=$work/$1
  rm -rf "$runs" && mkdir -p "$runs"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version \
    --format=csv,noheader
  date -u
}
gpu_test() {  # NAME [ARGS...]: one GPU test binary, its log in $out; its summary and failures
  local t=$1
  shift
  "$dir/$t" "$@" > "$out/$t.log" 2>&1
  echo "$t exit $?: $(grep -E '^\[  (PASSED|FAILED) ' "$out/$t.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \]' "$out/$t.log" | head -20
}
gpu_tests() {  # [KERNEL_FILTER]
  local filter=()
  [[ -n ${1:-} ]] && filter=(--gtest_filter="$1")
  gpu_test cuda_kernels_test "${filter[@]}"
  gpu_test cuda_model_test
}
