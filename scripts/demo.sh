#!/usr/bin/env bash
# Builds the engine, writes a small random-weight Mistral checkpoint (Hugging Face layout), and
# generates from it: greedy, sampled, from text, the speed at batch 1, and again with int4 weights.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMISTRAL_BUILD_TESTS=OFF -DMISTRAL_BUILD_BENCH=OFF >/dev/null
cmake --build build -j "$(nproc)" --target mistral
mistral=build/apps/cli/mistral
model=build/demo-model
[ -f "$model/config.json" ] || $mistral random-checkpoint --preset tiny --out "$model" --seed 1
# Mistral's own v1 tokenizer (32000 tokens, the tiny preset's vocabulary) from mistral-common.
data=$(python3 -c "import mistral_common, os; print(os.path.dirname(mistral_common.__file__) + '/data')")
cp "$data/tokenizer.model.v1" "$model/tokenizer.model"
echo '{"input_ids": [[1, 415, 2936, 9060], [1, 22557, 0, 0]], "attention_mask": [[1, 1, 1, 1], [1, 1, 0, 0]]}' \
  > build/demo-input.json
echo "== greedy, 16 new tokens per row"
$mistral generate --model "$model" --input build/demo-input.json --max-new-tokens 16 --greedy --json
echo "== sampled (temperature 0.8, top-p 0.9, seed 42)"
$mistral generate --model "$model" --input build/demo-input.json --max-new-tokens 16 \
  --temperature 0.8 --top-p 0.9 --seed 42 --json
echo "== text in, text out (random weights: expect gibberish, streamed as it is generated)"
$mistral generate --model "$model" --prompt "The capital of France is" --max-new-tokens 16 --greedy
echo "== speed"
$mistral bench --model "$model" --prompt-tokens 64 --new-tokens 32
echo "== int4 weights (mistral quantize), bf16 KV cache"
rm -rf build/demo-model-int4
$mistral quantize --model "$model" --out build/demo-model-int4 --weights int4
cp "$model/tokenizer.model" build/demo-model-int4/
$mistral generate --model build/demo-model-int4 --prompt "The capital of France is" \
  --max-new-tokens 16 --greedy --kv-cache bf16
$mistral bench --model build/demo-model-int4 --prompt-tokens 64 --new-tokens 32 --kv-cache bf16
