#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for RUNS executions (default 1,000,000).
# Usage: fuzz/run.sh [RUNS] [extra libFuzzer flags]. Needs clang + libclang-rt-14-dev (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-1000000}
shift || true
OUT=build-fuzz
mkdir -p "$OUT"
FLAGS="-std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Isrc"
clang++ $FLAGS fuzz/fuzz_safetensors_header.cpp src/core/safetensors_header.cpp -o "$OUT/fuzz_safetensors_header"
clang++ $FLAGS fuzz/fuzz_tokenizer_json.cpp src/tokenizer/hf_tokenizer.cpp src/tokenizer/unicode.cpp -o "$OUT/fuzz_tokenizer_json"
for t in safetensors_header:safetensors tokenizer_json:tokenizer; do
  target=${t%%:*}; seeds=${t##*:}
  corpus="$OUT/corpus-$target"
  mkdir -p "$corpus"
  echo "== fuzz_$target: $RUNS runs"
  "$OUT/fuzz_$target" -runs="$RUNS" -max_len=4096 -timeout=10 -print_final_stats=1 "$@" "$corpus" "fuzz/seeds/$seeds" 2>&1 \
    | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|Done|==.*ERROR|SUMMARY)" || true
  test "${PIPESTATUS[0]}" -eq 0
done
